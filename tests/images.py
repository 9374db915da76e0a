"""The offline test images (built by deploy/test-engine/setup.sh), named once for every
test on a real engine; AIVC_TEST_IMAGE and AIVC_SSHD_IMAGE name others."""

import os

TEST_IMAGE = os.environ.get("AIVC_TEST_IMAGE", "aivc-test/busybox:latest")
SSHD_IMAGE = os.environ.get("AIVC_SSHD_IMAGE", "aivc-test/sshd:latest")
