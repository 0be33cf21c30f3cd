// @generated automatically by Diesel CLI.

diesel::table! {
    backup_storage (id) {
        id -> BigInt,
        name -> Nullable<Text>,
        stype -> Nullable<Text>,
        conn_str -> Nullable<Text>,
        hostaddr -> Nullable<Text>,
        port -> Nullable<BigInt>,
        user_name -> Nullable<Text>,
        passwd -> Nullable<Text>,
        extra -> Nullable<Text>,
    }
}

diesel::table! {
    cluster_general_job_log (id) {
        id -> BigInt,
        job_id -> Nullable<Text>,
        related_id -> Text,
        job_type -> Text,
        status -> Text,
        memo -> Nullable<Text>,
        when_started -> Timestamp,
        when_ended -> Nullable<Timestamp>,
        job_info -> Nullable<Text>,
        user_name -> Nullable<Text>,
    }
}

diesel::table! {
    cluster_coldbackups (id) {
        id -> BigInt,
        storage_id -> BigInt,
        cluster_id -> BigInt,
        shard_id -> Nullable<BigInt>,
        comp_id -> Nullable<BigInt>,
        backup_type -> Text,
        status -> Text,
        start_ts -> Timestamp,
        end_ts -> Nullable<Timestamp>,
        memo -> Nullable<Text>,
        backup_addr -> Nullable<Text>,
    }
}

diesel::table! {
    cluster_mgr_nodes (id) {
        id -> BigInt,
        hostaddr -> Text,
        port -> BigInt,
        prometheus_port -> Nullable<BigInt>,
        member_state -> Text,
    }
}

diesel::table! {
    commit_log_template_table (id) {
        id -> BigInt,
        comp_node_id -> BigInt,
        txn_id -> BigInt,
        next_txn_cmd -> Text,
        prepare_ts -> Timestamp,
        written_shards -> Nullable<Text>,
    }
}

diesel::table! {
    comp_nodes (db_cluster_id, id) {
        id -> BigInt,
        name -> Text,
        hostaddr -> Text,
        port -> BigInt,
        db_cluster_id -> BigInt,
        when_created -> Timestamp,
        user_name -> Text,
        passwd -> Text,
        status -> Text,
        svr_node_id -> Nullable<BigInt>,
        cpu_cores -> BigInt,
        #[sql_name = "max_mem_MB"]
        max_mem_mb -> BigInt,
        max_conns -> BigInt,
        extra_props -> Nullable<Text>,
        coldbackup_period -> Nullable<Text>,
    }
}

diesel::table! {
    comp_nodes_id_seq (id) {
        id -> BigInt,
    }
}

diesel::table! {
    db_clusters (id) {
        id -> BigInt,
        name -> Text,
        nick_name -> Nullable<Text>,
        owner -> Nullable<Text>,
        ddl_log_tblname -> Nullable<Text>,
        when_created -> Timestamp,
        business -> Nullable<Text>,
        memo -> Nullable<Text>,
        status -> Text,
        ha_mode -> Text,
    }
}

diesel::table! {
    ddl_ops_log_template_table (id) {
        id -> BigInt,
        objname -> Text,
        db_name -> Text,
        schema_name -> Text,
        user_name -> Text,
        role_name -> Text,
        search_path -> Text,
        optype -> Text,
        objtype -> Text,
        when_logged -> Timestamp,
        sql_src -> Text,
        sql_storage_node -> Text,
        target_shard_id -> BigInt,
        initiator -> BigInt,
        txn_id -> BigInt,
    }
}

diesel::table! {
    global_configuration (name) {
        name -> Text,
        value -> Text,
    }
}

diesel::table! {
    kl_api_token (id) {
        id -> BigInt,
        name -> Text,
        role -> Text,
        token_hash -> Text,
        created_at -> Timestamp,
        last_used_at -> Nullable<Timestamp>,
        revoked_at -> Nullable<Timestamp>,
    }
}

diesel::table! {
    kl_audit (id) {
        id -> BigInt,
        at -> Timestamp,
        token_name -> Nullable<Text>,
        method -> Text,
        path -> Text,
        client -> Text,
        status -> BigInt,
    }
}

diesel::table! {
    kl_backup (id) {
        id -> BigInt,
        cluster_id -> BigInt,
        cluster_name -> Text,
        storage_id -> BigInt,
        job_id -> Nullable<BigInt>,
        status -> Text,
        started_at -> Timestamp,
        ended_at -> Nullable<Timestamp>,
        bytes -> BigInt,
        shape -> Nullable<Text>,
        manifest -> Nullable<Text>,
        error -> Nullable<Text>,
    }
}

diesel::table! {
    kl_backup_schedule (db_cluster_id) {
        db_cluster_id -> BigInt,
        storage_id -> BigInt,
        backup_window -> Text,
        keep_count -> Nullable<BigInt>,
        keep_days -> Nullable<BigInt>,
        enabled -> Text,
        updated_at -> Timestamp,
    }
}

diesel::table! {
    kl_cluster_policy (db_cluster_id) {
        db_cluster_id -> BigInt,
        auto_restart -> Text,
        auto_rebuild -> Text,
    }
}

diesel::table! {
    kl_cluster_secret (cluster_id) {
        cluster_id -> BigInt,
        manager_pwd -> Text,
        repl_pwd -> Text,
        pgx_pwd -> Text,
        comp_pwd -> Text,
    }
}

diesel::table! {
    kl_comp_node_dir (comp_node_id) {
        comp_node_id -> BigInt,
        base_dir -> Text,
    }
}

diesel::table! {
    kl_failover (id) {
        id -> BigInt,
        cluster_id -> BigInt,
        shard_id -> BigInt,
        kind -> Text,
        started_at -> Timestamp,
        old_primary -> BigInt,
        new_primary -> Nullable<BigInt>,
        outcome -> Text,
        proven_lossless -> BigInt,
        possible_loss -> Nullable<Text>,
        reason -> Nullable<Text>,
        fence -> Nullable<Text>,
        phases -> Text,
        old_primary_fate -> Nullable<Text>,
        total_ms -> BigInt,
    }
}

diesel::table! {
    kl_leader_lease (name) {
        name -> Text,
        holder -> Text,
        epoch -> BigInt,
        expires_at -> Timestamp,
    }
}

diesel::table! {
    kl_machine_probe (server_node_id) {
        server_node_id -> BigInt,
        os -> Text,
        kernel -> Text,
        data_dirs_json -> Text,
        probed_at -> Timestamp,
    }
}

diesel::table! {
    kl_machine_ssh (server_node_id) {
        server_node_id -> BigInt,
        ssh_port -> BigInt,
        ssh_user -> Text,
        ssh_key_path -> Text,
    }
}

diesel::table! {
    kl_shard_node_dir (shard_node_id) {
        shard_node_id -> BigInt,
        base_dir -> Text,
    }
}

diesel::table! {
    meta_db_nodes (id) {
        id -> BigInt,
        hostaddr -> Text,
        port -> BigInt,
        user_name -> Text,
        passwd -> Text,
        master_priority -> BigInt,
        member_state -> Text,
        sync_state -> Text,
        degrade_conf_state -> Text,
        degrade_run_state -> Text,
        replica_delay -> BigInt,
        degrade_conf_time -> BigInt,
        sync_num -> BigInt,
        nodemgr_bin_path -> Nullable<Text>,
    }
}

diesel::table! {
    node_map_master (cluster_id, node_host) {
        cluster_id -> BigInt,
        node_host -> Text,
        master_host -> Text,
        master_uuid -> Nullable<Text>,
    }
}

diesel::table! {
    server_nodes (id) {
        id -> BigInt,
        hostaddr -> Text,
        dc_id -> Nullable<BigInt>,
        rack_id -> Nullable<Text>,
        comp_datadir -> Nullable<Text>,
        datadir -> Nullable<Text>,
        logdir -> Nullable<Text>,
        wal_log_dir -> Nullable<Text>,
        total_mem -> Nullable<BigInt>,
        total_cpu_cores -> Nullable<BigInt>,
        svc_since -> Nullable<Timestamp>,
        nodemgr_port -> Nullable<BigInt>,
        nodemgr_tcp_port -> Nullable<BigInt>,
        nodemgr_prometheus_port -> Nullable<BigInt>,
        nodemgr_bin_path -> Nullable<Text>,
        nodemgr_tmp_data_abs_path -> Nullable<Text>,
        extra_props -> Nullable<Text>,
        node_stats -> Text,
        current_port_pos -> BigInt,
        machine_type -> Nullable<Text>,
        port_range -> Nullable<Text>,
        used_port -> Nullable<Text>,
        installing_port -> Nullable<Text>,
    }
}

diesel::table! {
    shard_nodes (id) {
        id -> BigInt,
        ro_weight -> BigInt,
        hostaddr -> Text,
        port -> BigInt,
        user_name -> Text,
        passwd -> Text,
        shard_id -> BigInt,
        db_cluster_id -> BigInt,
        svr_node_id -> Nullable<BigInt>,
        when_created -> Timestamp,
        master_priority -> BigInt,
        status -> Text,
        cpu_cores -> BigInt,
        #[sql_name = "initial_storage_GB"]
        initial_storage_gb -> BigInt,
        #[sql_name = "max_storage_GB"]
        max_storage_gb -> BigInt,
        #[sql_name = "innodb_buffer_pool_MB"]
        innodb_buffer_pool_mb -> BigInt,
        #[sql_name = "rocksdb_buffer_pool_MB"]
        rocksdb_buffer_pool_mb -> BigInt,
        extra_props -> Nullable<Text>,
        sync_state -> Text,
        member_state -> Text,
        replica_delay -> BigInt,
        backup_node -> Text,
    }
}

diesel::table! {
    shards (id) {
        id -> BigInt,
        name -> Text,
        when_created -> Timestamp,
        num_nodes -> BigInt,
        space_volumn -> BigInt,
        num_tablets -> BigInt,
        db_cluster_id -> BigInt,
        sync_num -> BigInt,
        extra_props -> Nullable<Text>,
        degrade_conf_state -> Text,
        degrade_run_state -> Text,
        degrade_conf_time -> BigInt,
        status -> Text,
        coldbackup_period -> Nullable<Text>,
    }
}

diesel::joinable!(comp_nodes -> db_clusters (db_cluster_id));
diesel::joinable!(kl_backup_schedule -> db_clusters (db_cluster_id));
diesel::joinable!(kl_cluster_policy -> db_clusters (db_cluster_id));
diesel::joinable!(kl_machine_probe -> server_nodes (server_node_id));
diesel::joinable!(kl_machine_ssh -> server_nodes (server_node_id));
diesel::joinable!(kl_shard_node_dir -> shard_nodes (shard_node_id));
diesel::joinable!(shard_nodes -> db_clusters (db_cluster_id));
diesel::joinable!(shard_nodes -> shards (shard_id));
diesel::joinable!(shards -> db_clusters (db_cluster_id));

diesel::allow_tables_to_appear_in_same_query!(
    backup_storage,
    cluster_coldbackups,
    cluster_general_job_log,
    cluster_mgr_nodes,
    commit_log_template_table,
    comp_nodes,
    comp_nodes_id_seq,
    db_clusters,
    ddl_ops_log_template_table,
    global_configuration,
    kl_api_token,
    kl_audit,
    kl_backup,
    kl_backup_schedule,
    kl_cluster_policy,
    kl_cluster_secret,
    kl_comp_node_dir,
    kl_failover,
    kl_leader_lease,
    kl_machine_probe,
    kl_machine_ssh,
    kl_shard_node_dir,
    meta_db_nodes,
    node_map_master,
    server_nodes,
    shard_nodes,
    shards,
);
