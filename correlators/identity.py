"""Identity: map hostnames, FQDNs, IPs, MACs and device ids to one canonical asset id."""

from __future__ import annotations

from schemas.context import Asset
from schemas.models import Alert

__all__ = ["Identity"]


def _norm(value: str) -> str:
    return value.strip().lower()


def _claim(table: dict[str, str], key: str, asset_id: str) -> None:
    """Give `key` to `asset_id` unless it is another asset's own id or a smaller id holds it."""
    current = table.get(key)
    if current is None or current == asset_id:
        table[key] = asset_id
        return
    if _norm(current) == key:  # the key is the current holder's own id
        return
    if asset_id < current:
        table[key] = asset_id


class Identity:
    """Alias table built from the inventory; unknown assets keep their own (normalised) name."""

    def __init__(self, assets: list[Asset] | None = None) -> None:
        self._alias: dict[str, str] = {}
        self._short: dict[str, str] = {}
        self._assets: dict[str, Asset] = {}
        for asset in assets or ():
            self.add(asset)

    def add(self, asset: Asset) -> None:
        """Add or replace an asset and its aliases.

        Resolution does not depend on arrival order: an asset's own id beats another asset's
        alias, and between two assets claiming one alias the smaller id wins.
        """
        old = self._assets.get(asset.id)
        if old is not None:
            for alias in old.aliases:
                key = _norm(alias)
                if self._alias.get(key) == asset.id and key != _norm(asset.id):
                    del self._alias[key]
                short = key.split(".", 1)[0]
                if self._short.get(short) == asset.id:
                    del self._short[short]
        self._assets[asset.id] = asset
        self._alias[_norm(asset.id)] = asset.id
        for alias in asset.aliases:
            key = _norm(alias)
            _claim(self._alias, key, asset.id)
            short = key.split(".", 1)[0]
            if not short.isdigit() and short != key:
                _claim(self._short, short, asset.id)

    def resolve(self, alert: Alert) -> str:
        """Canonical id of the alert's asset: the first identifier the inventory knows."""
        alias = self._alias
        if not alias:
            return alert.asset
        for ident in alert.identifiers():
            hit = alias.get(_norm(ident))
            if hit is not None:
                return hit
        for ident in alert.identifiers():
            if "." in ident and not ident.replace(".", "").isdigit():
                hit = alias.get(_norm(ident).split(".", 1)[0]) or self._short.get(_norm(ident).split(".", 1)[0])
                if hit is not None:
                    return hit
        return alert.asset

    def asset(self, asset_id: str) -> Asset | None:
        """Inventory entry of a canonical id, if any."""
        return self._assets.get(asset_id)

    def assets(self) -> list[Asset]:
        """All inventory entries."""
        return list(self._assets.values())
