"""cnnkit studio: a local web page that shows the inside of a model for an image you choose.

``load_catalog`` reads the models and runs to serve; ``create_app`` is the ASGI app (FastAPI)
serving them; ``cnnkit studio`` runs it on uvicorn. Needs the ``studio`` extra
(``pip install cnnkit[studio]``).
"""

from .app import create_app
from .catalog import Catalog, Entry, display_names, load_catalog

__all__ = ["Catalog", "Entry", "create_app", "display_names", "load_catalog"]
