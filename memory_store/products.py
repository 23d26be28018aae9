"""The product record shared by the data-set loaders, the memory and the catalog."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict


class Product(BaseModel):
    """One catalog item.

    ``category`` is the full category path as the data set gives it (for the bundled Amazon set the
    levels are joined by spaces, root level first, e.g. ``"Industrial & Scientific Lab & Scientific
    Products ..."``); it may be empty.
    """

    model_config = ConfigDict(frozen=True)

    item_id: str
    title: str
    category: str = ""
    brand: str = ""

    def document(self) -> str:
        """The text embedded in the catalog and shown to the drafter."""
        parts = [self.title, self.category, self.brand]
        return ". ".join(p for p in parts if p)
