"""``python -m attnrec`` (and ``torchrun ... -m attnrec train --dt D``): the ``attnrec`` command line."""

from attnrec.cli import main

main()
