"""The prompt family: soft prompts (shallow and deep), the prompt model, artifacts, training, ensembles and voting."""
