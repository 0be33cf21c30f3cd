//! The original KunlunBase cluster_mgr's error codes (`70000 + n`, sent as decimal strings)
//! that this API answers with, and their messages as the original words them (Kunlun-XPanel
//! shows `error_info`; where we add detail it follows the message after `: `).
//!
//! Invariant: a code here means what it means in the original; a failure with no
//! matching code of its own uses the job type's generic failure code.

/// A code and the original's message for it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Code(pub u32, pub &'static str);

pub const OK: Code = Code(0, "OK");
/// Invalid request: also the original's answer for an unknown or unsupported job type.
pub const INVALID_REQUEST: Code = Code(70001, "Invalid Request Protocal");
pub const UNRECOGNIZED_JOB_TYPE: Code = Code(70001, "Unrecongnized job type");
pub const PARAMETER_ERROR: Code = Code(70005, "Parameter Error");

pub const LOST_SHARD_ID: Code = Code(70024, "Job param lost shard id");
pub const LOST_CLUSTER_ID: Code = Code(70025, "Job param lost cluster id");
pub const LOST_MASTER_HOSTADDR: Code = Code(70026, "Job param lost master hostaddr");
pub const GET_SHARD_FAILED: Code = Code(70027, "Get shard class by id failed");
pub const MASTER_NOT_SOURCE: Code = Code(70033, "Master hostaddr state is not source");
pub const ASSIGN_NOT_REPLICA: Code = Code(70034, "Assign hostaddr state is not replica");
pub const MANUAL_SW_FAILED: Code = Code(70035, "Get manual_sw result from meta failed");
pub const RB_NO_NODES: Code = Code(70036, "Rebuild node job dont have rb_node param");
pub const RB_NO_HOSTADDR: Code = Code(70037, "Rb_node of rebuild node job don't have no hostaddr");
pub const RB_NO_PORT: Code = Code(70038, "Rb_node of rebuild node job don't have no port");
pub const RB_NEED_HDFS: Code = Code(
    70039,
    "Rebuild node job need input hdfs_host in need_backup",
);
pub const RB_NOT_IN_SHARD: Code = Code(70041, "Rebuid hostaddr node is not in shard");
pub const RB_NO_PULL_HOST: Code = Code(70042, "Get pull host for rebuild node error");
/// Our generic failure of a rebuild (the original reports its node_mgr's code here).
pub const RB_FAILED: Code = Code(70047, "Get subtask of rebuild node error");

pub const MACHINE_MISS_TYPE: Code =
    Code(70050, "Machine request job miss machine_type in the paras");
pub const MACHINE_BAD_TYPE: Code = Code(70051, "Machine type is not support in request job");
pub const MACHINE_MISS_HOSTADDR: Code =
    Code(70052, "Create machine job miss hostaddr in request job");
pub const MACHINE_MISS_RACK: Code = Code(70053, "Create machine job miss rack_id in request job");
pub const MACHINE_MISS_DATADIR: Code =
    Code(70054, "Create machine job miss datadir in request job");
pub const MACHINE_MISS_LOGDIR: Code = Code(70055, "Create machine job miss logdir in request job");
pub const MACHINE_MISS_WALDIR: Code =
    Code(70056, "Create machine job miss wal_log_dir in request job");
pub const MACHINE_MISS_MEM: Code = Code(70057, "Create machine job miss total_mem in request job");
pub const MACHINE_MISS_CORES: Code = Code(
    70058,
    "Create machine job miss total_cpu_cores in request job",
);
pub const MACHINE_MISS_COMP_DATADIR: Code =
    Code(70061, "Create machine job miss comp_datadir in request job");
pub const MACHINE_EXISTS: Code = Code(70062, "Create machine job add hostaddr in server_nodes");
pub const MACHINE_USED_PORTS: Code = Code(70064, "Delete machine job used port is not null");
pub const MACHINE_NOT_FOUND: Code = Code(70066, "Delete machine hostaddr not in server_nodes");
pub const MACHINE_MISS_HOSTADDR_DEL: Code =
    Code(70067, "Delete machine job miss hostaddr in request job");
pub const MACHINE_UNALIVE: Code = Code(70158, "Create machine job report machine unalive");

pub const CC_MISS_HA_MODE: Code =
    Code(70071, "Create cluster job miss ha_mode in the request body");
pub const CC_MISS_SHARDS: Code = Code(70072, "Create cluster job miss shards in the request body");
pub const CC_BAD_SHARDS: Code = Code(70073, "Create cluster job input shards number wrong");
pub const CC_MISS_NODES: Code = Code(70074, "Create cluster job miss nodes in the request body");
pub const CC_BAD_NODES: Code = Code(70075, "Create cluster job input nodes number wrong");
pub const CC_MISS_COMPS: Code = Code(70076, "Create cluster job miss comps in the request body");
pub const CC_BAD_COMPS: Code = Code(70077, "Create cluster job input comps number wrong");
pub const CC_MISS_MAX_STORAGE: Code = Code(
    70078,
    "Create cluster job miss max_storage_size in the request body",
);
pub const CC_MISS_MAX_CONN: Code = Code(
    70079,
    "Create cluster job miss max_connections in the request body",
);
pub const CC_MISS_CPU: Code = Code(
    70080,
    "Create cluster job miss cpu_cores in the request body",
);
pub const CC_MISS_INNODB: Code = Code(
    70081,
    "Create cluster job miss innodb_size in the request body",
);
pub const CC_BAD_INNODB: Code = Code(70082, "Create cluster job input innodb_size wrong");
pub const CC_INSERT_FAILED: Code = Code(70083, "Insert cluster name into db_clusters failed");
pub const CC_INSTALL_STORAGE: Code = Code(70093, "Install storage error in create cluster job");
pub const CC_STORAGE_IPLISTS: Code =
    Code(70181, "Create cluster job assign storage iplists failed");
pub const CC_COMPUTER_IPLISTS: Code =
    Code(70182, "Create cluster job assign computer iplists failed");

pub const DC_LOST_PARA: Code = Code(70096, "Deleter cluster job lost input parameter");
pub const DC_BAD_NAME: Code = Code(70097, "Deleter cluster job check cluster name failed");
pub const DC_BAD_ID: Code = Code(70098, "Deleter cluster job check cluster id failed");
pub const DC_FAILED: Code = Code(70100, "Deleter cluster job delete shard failed");

pub const AC_MISS_COMPS: Code = Code(70108, "Add computer job miss comps in the request body");
pub const AC_MISS_CLUSTER: Code = Code(
    70109,
    "Add computer job miss cluster id in the request body",
);
pub const AC_BAD_COMPS: Code = Code(70110, "Add computer job input comps number wrong");
pub const AC_NO_CLUSTER: Code = Code(70111, "Get memo from db_clusters failed");
pub const AC_INSTALL: Code = Code(70148, "Add computer job install computer node failed");
pub const AC_IPLISTS: Code = Code(70185, "Add computer job assign computer iplists failed");

pub const AS_MISS_CLUSTER: Code = Code(70119, "Add shard job miss cluster id in the request body");
pub const AS_MISS_SHARDS: Code = Code(70120, "Add shard job miss shards id in the request body");
pub const AS_BAD_SHARDS: Code = Code(70121, "Add shard job shards number wrong");
pub const AS_MISS_NODES: Code = Code(70122, "Add shard job miss nodes in the request body");
pub const AS_BAD_NODES: Code = Code(70123, "Add shard job node number wrong");
pub const AS_INSTALL: Code = Code(70146, "Add shard job install storage node failed");
pub const AS_NO_CLUSTER: Code = Code(70152, "Add shard job get shards from metadb failed");
pub const AS_IPLISTS: Code = Code(70184, "Add shard job assign storage iplists failed");

pub const DCOMP_MISS_CLUSTER: Code = Code(
    70132,
    "Delete computer job miss cluster id in the request body",
);
pub const DCOMP_MISS_COMP: Code = Code(
    70133,
    "Delete computer job miss comp id in the request body",
);
pub const DCOMP_NOT_FOUND: Code = Code(
    70134,
    "Delete computer job get computer node from metadb failed",
);
pub const DCOMP_FAILED: Code = Code(70136, "Delete computer job delete computer failed");
pub const DCOMP_LAST: Code = Code(70157, "Delete computer job get only one comp node");

pub const DS_MISS_CLUSTER: Code = Code(
    70139,
    "Delete shard job miss cluster id in the request body",
);
pub const DS_MISS_SHARD: Code = Code(70140, "Delete shard job miss shard id in the request body");
pub const DS_NOT_FOUND: Code = Code(
    70141,
    "Delete shard job get storage node from shard_nodes failed",
);
pub const DS_FAILED: Code = Code(70144, "Delete shard job delete storage failed");
pub const DS_LAST: Code = Code(70174, "Delete shard job get just only one shard");

pub const AN_MISS_CLUSTER: Code = Code(70154, "Add node job miss cluster_id in the request body");
pub const AN_MISS_NODES: Code = Code(70155, "Add node job miss nodes in the request body");
pub const AN_BAD_NODES: Code = Code(70156, "Add node job node number wrong");
pub const AN_NO_SHARD: Code = Code(70161, "Add node job get shard_id from shards failed");
pub const AN_INSTALL: Code = Code(70165, "Add node job dispatch install storage job failed");
pub const AN_IPLISTS: Code = Code(70183, "Add node job assign storage iplists failed");

pub const DN_ONLY_NODE: Code = Code(70159, "Delete node job get only one shard node");
pub const DN_MISS_CLUSTER: Code =
    Code(70168, "Delete node job miss cluster_id in the request body");
pub const DN_MISS_SHARD: Code = Code(70169, "Delete node job miss shard_id in the request body");
pub const DN_MISS_HOSTADDR: Code = Code(70170, "Delete node job miss hostaddr in the request body");
pub const DN_MISS_PORT: Code = Code(70171, "Delete node job miss port in the request body");
pub const DN_PRIMARY: Code = Code(70172, "Delete node job delete master node");
pub const DN_NOT_IN_SHARD: Code = Code(70173, "Delete node job delete node is not in shards");
pub const DN_FAILED: Code = Code(70178, "Delete node job dispatch delete job failed");
pub const DN_NO_SHARD: Code = Code(70180, "Delete node job get params from shard_node failed");

pub const SUBMIT_SWITCH_FAILED: Code = Code(70188, "Submit manual consfailover job failed");
pub const MANUAL_NOSWITCH_EXISTS: Code = Code(70014, "Manual Noswitch Node Exist");

/// Legacy block, used by the sync handlers.
pub const MEMO_JSON: Code = Code(70101, "memo json error");
pub const NODE_PARA: Code = Code(70103, "node para error");
pub const JOB_ID_NOT_FOUND: Code = Code(70104, "job_id no find");
pub const GET_VARIABLE: Code = Code(70108, "get variable error");
pub const SET_VARIABLE: Code = Code(70109, "set variable error");

/// Legacy block `ERR_BACKUP_STORAGE` (backup storage job types).
pub const BS_ERROR: Code = Code(70200, "backup storage error");
pub const BS_NAME_EXISTS: Code = Code(70201, "backup storage name exists");
pub const BS_NO_NAME: Code = Code(70202, "backup storage name not exists");
pub const BS_STYPE: Code = Code(70203, "backup storage stype error");
