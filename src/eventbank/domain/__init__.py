"""The pure domain: money, events and the Account aggregate. No I/O, no clock, no random ids."""
