import sys

from selectscale.figures import main

sys.exit(main())
