"""Importers for foreign adapter formats (AdapterHub `adapters`, HF `peft`)."""
