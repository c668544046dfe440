"""`python -m ensemble.member --job J --member I`: the member process the runner starts."""
import sys

from .process import main

sys.exit(main())
