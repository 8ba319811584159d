import sys

from infsim.cli import main

sys.exit(main())
