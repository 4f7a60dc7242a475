import sys

from latentmix.cli import main

sys.exit(main())
