"""The inventory at any past time, rebuilt from the ledger alone, each fact with its entry and proof."""
