"""``python -m packfleet.bench`` (``make bench``); see :mod:`packfleet.bench._main`."""

from packfleet.bench._main import main

if __name__ == "__main__":
    main()
