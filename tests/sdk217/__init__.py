"""The bridge with the oldest supported cvat-sdk (2.17, for CVAT 2.17 servers).

CI runs the bridge tests twice: with the venv's cvat-sdk (2.8x, against a fake CVAT 2.54)
and with cvat-sdk 2.17 put first on ``PYTHONPATH`` (against a fake CVAT 2.17), without
touching the venv::

    tests/sdk217/install.sh          # pip install --target .cache/sdk-2.17 cvat-sdk==2.17.0 …
    PYTHONPATH=.cache/sdk-2.17 HF_HUB_OFFLINE=1 .venv/bin/python -m pytest -q \\
        tests/test_bridge_*.py tests/test_cli_cvat.py tests/sdk217 tests/test_fake_cvat.py

The fake's version follows the installed SDK (`tests.bridge_support.FAKE_VERSION`). The tests
here check that pairing and the CVAT-RLE fallback used where ``cvat_sdk.masks`` is missing.
"""
