"""The rectification ledger (问题清单和整改台账): the state of every finding."""
