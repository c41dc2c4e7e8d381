"""An in-memory snapshot of who is who, for the rules. Built by rolekeeper.directory.snapshot."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from rolekeeper.detect.addresses import domain_of


@dataclass(frozen=True, slots=True)
class Employee:
    id: int
    name: str
    address: str  # the named corporate address
    exempt: bool = False


@dataclass(frozen=True, slots=True)
class ClientRef:
    id: int
    crm_id: str
    name: str
    segment: str


@dataclass(frozen=True)
class Directory:
    firm_domains: frozenset[str]
    freemail: frozenset[str]
    employees: Mapping[str, Employee]  # named address → employee
    personal: Mapping[str, Employee]  # known personal address → employee
    roles: Mapping[str, Employee | None]  # role address → current holder
    contacts: Mapping[str, ClientRef]  # a client's contact address → client
    client_domains: Mapping[str, ClientRef]
    corporate_numbers: frozenset[str] = frozenset()
    client_numbers: Mapping[int, frozenset[str]] = field(default_factory=dict)
    personal_numbers: Mapping[str, Employee] = field(default_factory=dict)
    region: str = "RU"

    def client_of(self, address: str) -> ClientRef | None:
        """The client an address belongs to: a listed contact, or a client's own domain
        (a free-mail domain never makes anyone a client party)."""
        found = self.contacts.get(address)
        if found is not None:
            return found
        domain = domain_of(address)
        if domain in self.freemail or domain in self.firm_domains:
            return None
        return self.client_domains.get(domain)

    def employee(self, address: str) -> Employee | None:
        """An employee by named address (exempt people are skipped)."""
        found = self.employees.get(address)
        return None if found is None or found.exempt else found

    def is_firm(self, address: str) -> bool:
        return domain_of(address) in self.firm_domains

    def personal_owner(self, address: str) -> Employee | None:
        return self.personal.get(address)

    def is_personal(self, address: str) -> bool:
        """A known personal address, or free mail that is not a client's listed contact."""
        if address in self.personal:
            return True
        return domain_of(address) in self.freemail and address not in self.contacts

    def speaker_for_firm(self, address: str) -> Employee | None:
        """Who writes when mail comes from a firm address: the person, or the role's holder."""
        return self.employee(address) or self.roles.get(address)

    def clients_among(self, addresses: Iterable[str]) -> list[ClientRef]:
        seen: dict[int, ClientRef] = {}
        for address in addresses:
            client = self.client_of(address)
            if client is not None:
                seen.setdefault(client.id, client)
        return list(seen.values())
