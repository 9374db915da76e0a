"""The old system's files as the legacy import tests write them: a small lab with three
accounts, a history with a GPU-less row and a running and a scheduled booking."""

from pathlib import Path

HOST_DEPLOY = """\
volume_work_dir: /mnt/Users # users work_dir
volume_dataset_dir: /mnt/Dataset
volume_backup_dir: /mnt/Backup

users_config_yaml: ./cfg/users_config.yaml
capability_config_yaml: ./cfg/capability_config.yaml

images:
  - rober5566a/aivc-server:latest
  - rober5566a/aivc-server:cuda11.8.0-cudnn8-devel-ubuntu20.04
"""

CAPABILITY = """\
max:
  cpus: 62 # cores
  ram: 30 # GB
  swap_size: 10 # GB
  gpus: 4

  shm_rate: ram / (ram + swap_size)
  memory: ram + swap_size

  backup_space: 200 # GB
  work_space: 500 # GB

allow_userIDs:
  - m11007s05
  - M11107S01
  - m11207s09

max_default_capability:
  cpus: 8
  memory: 32
  gpus: 1

  backup_space: 50
  work_space: 200

max_custom_capability:
  m11107s01:
    cpus: max
    memory: 36
    backup_space: max
"""

USERS = """\
m11007s05:
  password: "correct horse battery staple"
  forward_port: 10005
  image: null
  extra_command: null
  volume_work_dir: /mnt/Users/m11007s05
  volume_dataset_dir: /mnt/Dataset
  volume_backup_dir: /mnt/Backup/m11007s05

m11107s01:
  password: "0000"
  forward_port: 10001
  image: rober5566a/aivc-server:cuda11.8.0-cudnn8-devel-ubuntu20.04
  extra_command: jupyter lab
  volume_work_dir: /mnt/Users/m11107s01
  volume_dataset_dir: /mnt/Dataset
  volume_backup_dir: /mnt/Backup/m11107s01
"""

HEADER = "start,end,user_id,cpus,memory,gpus,forward_port,image,extra_command\n"
USED = (
    HEADER
    + '2025-01-01 13:30:00.000000,2025-01-04 13:30:00.000000,m11007s05,8,32,"[0, 1]",10005,null,null\n'
    + "2025-01-02 09:00:00.000000,2025-01-02 12:00:00.000000,m11107s01,4.5,16,[],10001,"
    "rober5566a/aivc-server:cuda10-old,null\n"
)
USING = HEADER + '2026-03-02 09:00:00,2026-03-03 09:00:00,m11107s01,16,36,"[2]",null,null,python train.py\n'
BOOKING = HEADER + '2026-03-04 10:00:00,2026-03-05 10:00:00,m11007s05,2,8,"[0]",10005,null,null\n'


def write_old_system(
    root: Path,
    *,
    host_deploy: str = HOST_DEPLOY,
    capability: str = CAPABILITY,
    users: str = USERS,
    used: str = USED,
    using: str = USING,
    booking: str = BOOKING,
) -> tuple[Path, Path]:
    cfg, jobs = root / "cfg", root / "jobs"
    cfg.mkdir()
    jobs.mkdir()
    (cfg / "host_deploy.yaml").write_text(host_deploy)
    (cfg / "capability_config.yaml").write_text(capability)
    (cfg / "users_config.yaml").write_text(users)
    (jobs / "used.csv").write_text(used)
    (jobs / "using.csv").write_text(using)
    (jobs / "booking.csv").write_text(booking)
    return cfg, jobs


# The old checker's known bug: GPU 0 handed to two users for overlapping windows.
GPU0_TWICE = (
    '2025-03-01 09:00:00,2025-03-01 18:00:00,m11007s05,2,8,"[0]",null,null,null\n'
    '2025-03-01 12:00:00,2025-03-01 20:00:00,m11107s01,2,8,"[0]",null,null,null\n'
)
