import sys

from monitorx.cli import main

sys.exit(main())
