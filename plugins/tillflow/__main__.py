import sys

from tillflow.cli import main

sys.exit(main())
