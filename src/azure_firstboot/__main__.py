import sys

from azure_firstboot.cli import main

sys.exit(main())
