"""Identity: map hostnames, FQDNs, IPs, MACs and device ids to one canonical asset id."""

from __future__ import annotations

from schemas.context import Asset
from schemas.models import Alert

__all__ = ["Identity"]


def _norm(value: str) -> str:
    return value.strip().lower()


def _names(asset: Asset) -> dict[str, int]:
    """Exact names an asset claims, ranked: its own id (0) beats another asset's alias (1)."""
    names = dict.fromkeys((_norm(alias) for alias in asset.aliases), 1)
    names[_norm(asset.id)] = 0
    return names


def _short_names(asset: Asset) -> dict[str, int]:
    """Host names (before the first dot) of an asset's dotted aliases."""
    names: dict[str, int] = {}
    for alias in asset.aliases:
        key = _norm(alias)
        short = key.split(".", 1)[0]
        if not short.isdigit() and short != key:
            names[short] = 0
    return names


class Identity:
    """Alias table built from the inventory; unknown assets keep their own (normalised) name."""

    def __init__(self, assets: list[Asset] | None = None) -> None:
        self._alias: dict[str, str] = {}
        self._short: dict[str, str] = {}
        # every claim on every name, so a name goes back to the next claimant when its holder
        # drops it: name -> {asset id: rank}
        self._alias_claims: dict[str, dict[str, int]] = {}
        self._short_claims: dict[str, dict[str, int]] = {}
        self._assets: dict[str, Asset] = {}
        for asset in assets or ():
            self.add(asset)

    def add(self, asset: Asset) -> None:
        """Add or replace an asset and its aliases.

        Resolution depends only on the current inventory, never on arrival order: an asset's
        own id beats another asset's alias, and between two assets claiming one alias the
        smaller id wins.
        """
        old = self._assets.get(asset.id)
        self._assets[asset.id] = asset
        for table, claims, names_of in (
            (self._alias, self._alias_claims, _names),
            (self._short, self._short_claims, _short_names),
        ):
            touched: set[str] = set()
            if old is not None:
                for key in names_of(old):
                    claims[key].pop(asset.id, None)
                    touched.add(key)
            for key, rank in names_of(asset).items():
                claims.setdefault(key, {})[asset.id] = rank
                touched.add(key)
            for key in touched:
                holders = claims[key]
                if holders:
                    table[key] = min(holders, key=lambda owner: (holders[owner], owner))
                else:
                    del claims[key]
                    table.pop(key, None)

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
