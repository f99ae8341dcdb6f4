import sys

from segcore.cli.main import main

sys.exit(main())
