import sys

from gsmv.cli import main

sys.exit(main())
