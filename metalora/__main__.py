import sys

from metalora.cli import main

sys.exit(main())
