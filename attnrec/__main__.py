import sys

from attnrec.cli import main

sys.exit(main())
