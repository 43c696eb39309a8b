import sys

from zeroskip.cli import main

sys.exit(main())
