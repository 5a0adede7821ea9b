"""A catalog URL that cannot be used is refused without repeating the password it holds."""

from __future__ import annotations

import pytest

from packfleet.catalog import Catalog
from packfleet.errors import CatalogError

SECRET = "s3cr3t-Pa55"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql://packfleet:{SECRET}@db:notaport/catalog",  # SQLAlchemy: ValueError
        f"packfleet:{SECRET}@db/catalog",  # no scheme: ArgumentError, whose text quotes the URL
        f"mysql://packfleet:{SECRET}@db/catalog",  # parsed, but not a supported dialect
    ],
)
def test_an_unusable_url_is_a_catalog_error_without_the_password(url: str) -> None:
    with pytest.raises(CatalogError) as caught:
        Catalog.open(url, connect_timeout=1)
    shown = f"{caught.value}\n{caught.value.__cause__ or ''}"
    assert SECRET not in shown
