"""Schemathesis hooks of the API fuzz (tests/tests/api_fuzz.rs).

Invariant: the daemon under fuzz never reaches a generated address. Every machine body that
schemathesis sends is rewritten just before the call so that, were the daemon to accept it, the
machine is stored unprobed (`probe: false`) at a loopback address (127.x.y.z) with SSH port 1,
where nothing listens: a job that picks such a machine fails on a refused connection. Values of
the wrong type are left alone (the daemon refuses those before it looks at the address).
The daemon itself runs with `machine_check_interval = 0`, so no liveness round SSHes either.
"""

import itertools
import os

import schemathesis

_next = itertools.count(1)
_MACHINE_PATHS = {("POST", "/v1/machines"), ("PATCH", "/v1/machines/{id}")}
# The token the fuzz authenticates with: revoking it would turn the rest of the run into 401s.
_OWN_TOKEN = os.environ.get("KUNLUN_FUZZ_TOKEN_NAME", "")


def _loopback():
    n = next(_next)
    return f"127.{(n >> 16) & 255}.{(n >> 8) & 255}.{(n & 255) or 1}"


@schemathesis.hook
def before_call(ctx, case, **kwargs):
    key = (case.method.upper(), case.path)
    if key == ("DELETE", "/v1/tokens/{name}") and _OWN_TOKEN:
        params = case.path_parameters or {}
        if params.get("name") == _OWN_TOKEN:
            params["name"] = _OWN_TOKEN + "-not"
        return
    if key not in _MACHINE_PATHS:
        return
    body = case.body
    if not isinstance(body, dict):
        return
    if isinstance(body.get("probe", True), bool):
        body["probe"] = False
    if isinstance(body.get("hostaddr"), str):
        body["hostaddr"] = _loopback()
    port = body.get("ssh_port", 22)
    if isinstance(port, int) and not isinstance(port, bool) and 1 <= port <= 65535:
        body["ssh_port"] = 1
