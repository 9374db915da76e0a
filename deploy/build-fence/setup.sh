#!/bin/sh
# The parent cgroup that bounds the processes of every DoPQ build step on this GPU server
# (docs/security.md, "The build fence"). Idempotent; run as root, before the agent starts:
# the agent's unit runs it as `ExecStartPre=+` (cgroups do not survive a reboot).
#   JOB_BUILD_CGROUP_PARENT  the parent (default aivc-build); a name ending in .slice is a
#                            systemd slice, for engines with the systemd cgroup driver
#   JOB_BUILD_PIDS_LIMIT     processes all builds of the server share (default 512; 0: none)
set -eu
parent=${JOB_BUILD_CGROUP_PARENT:-aivc-build}
limit=${JOB_BUILD_PIDS_LIMIT:-512}
[ "$limit" = 0 ] && exit 0
case "$parent" in
*.slice)
    mkdir -p /run/systemd/system
    printf '[Slice]\nTasksAccounting=yes\nTasksMax=%s\n' "$limit" >"/run/systemd/system/$parent"
    systemctl daemon-reload
    systemctl start "$parent"
    ;;
*)
    parent=$(printf '%s' "$parent" | sed 's#^/*##; s#/*$##')
    if [ -e /sys/fs/cgroup/cgroup.controllers ]; then
        grep -qw pids /sys/fs/cgroup/cgroup.subtree_control || echo +pids >/sys/fs/cgroup/cgroup.subtree_control
        mkdir -p "/sys/fs/cgroup/$parent"
        echo "$limit" >"/sys/fs/cgroup/$parent/pids.max"
    else
        mkdir -p "/sys/fs/cgroup/pids/$parent"
        echo "$limit" >"/sys/fs/cgroup/pids/$parent/pids.max"
    fi
    ;;
esac
echo "build fence: $parent limited to $limit processes"
