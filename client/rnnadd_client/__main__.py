"""`python -m rnnadd_client` runs the same command line as `rnnadd`."""

import sys

from rnnadd_client.cli import main

sys.exit(main())
