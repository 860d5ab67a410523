"""IPR writes (STYLE.md §1, §3): every state change runs under the row lock, checked against iprs.policy, audited."""

from iprs.services.deployment import (
    deployments_resume_stalled,
    ipr_abort,
    ipr_mark_deployed,
    ipr_mark_deploying,
    ipr_mark_failed,
    ipr_run_deployment,
)
from iprs.services.environments import approval_policy_set, environment_create, environment_update
from iprs.services.ipr import (
    ipr_approve,
    ipr_close,
    ipr_deploy,
    ipr_open,
    ipr_open_reconcile,
    ipr_open_rollback,
    ipr_override,
    ipr_reject,
    ipr_replan,
    ipr_request_changes,
    ipr_set_state,
    ipr_submit,
    ipr_update_version,
)
from iprs.services.locks import environment_lock_acquire, environment_lock_heartbeat, environment_lock_release

__all__ = [
    "approval_policy_set",
    "deployments_resume_stalled",
    "environment_create",
    "environment_lock_acquire",
    "environment_lock_heartbeat",
    "environment_lock_release",
    "environment_update",
    "ipr_abort",
    "ipr_approve",
    "ipr_close",
    "ipr_deploy",
    "ipr_mark_deployed",
    "ipr_mark_deploying",
    "ipr_mark_failed",
    "ipr_open",
    "ipr_open_reconcile",
    "ipr_open_rollback",
    "ipr_override",
    "ipr_reject",
    "ipr_replan",
    "ipr_request_changes",
    "ipr_run_deployment",
    "ipr_set_state",
    "ipr_submit",
    "ipr_update_version",
]
