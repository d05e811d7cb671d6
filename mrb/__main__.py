import sys

from mrb.cli import main

sys.exit(main())
