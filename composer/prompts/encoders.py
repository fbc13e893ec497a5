"""What a prompt trains through before it is collapsed to plain tensors on save.

- `PromptReparam`: prefix tuning's MLP (Li & Liang 2021; PEFT's `prefix_projection`, AdapterHub's
  `bottleneck_size`): Linear(H, hidden), tanh, Linear(hidden, layers·2·H) on the L prefix embeddings.
- `PromptEncoder`: P-tuning v1's prompt encoder (Liu et al. 2021), laid out as PEFT 0.21's
  `PromptEncoder`: an MLP (Linear, ReLU, Linear, ReLU, Linear) or a two-layer bidirectional LSTM
  followed by Linear(2h, 2h), ReLU, Linear(2h, H).
"""

from __future__ import annotations

import torch
from torch import nn


class PromptReparam(nn.Module):
    def __init__(self, hidden_size: int, width: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        self.mlp = nn.Sequential(
            nn.Linear(hidden_size, width), nn.Tanh(), nn.Linear(width, num_layers * 2 * hidden_size)
        )

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """[L, H] -> [layers, 2, L, H]: the flat [L, layers·2·H] output is layer-major, then key/value,
        as PEFT and AdapterHub both lay out `past_key_values`."""
        flat = self.mlp(embedding)
        return flat.view(embedding.shape[0], self.num_layers, 2, -1).permute(1, 2, 0, 3)


class PromptEncoder(nn.Module):
    def __init__(self, kind: str, hidden_size: int, width: int):
        super().__init__()
        self.lstm: nn.LSTM | None = None
        if kind == "lstm":
            self.lstm = nn.LSTM(hidden_size, width, num_layers=2, bidirectional=True, batch_first=True)
            self.mlp = nn.Sequential(nn.Linear(2 * width, 2 * width), nn.ReLU(), nn.Linear(2 * width, hidden_size))
        else:
            self.mlp = nn.Sequential(
                nn.Linear(hidden_size, width),
                nn.ReLU(),
                nn.Linear(width, width),
                nn.ReLU(),
                nn.Linear(width, hidden_size),
            )

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        """[L, H] -> [L, H]: the virtual tokens' embeddings."""
        x = self.lstm(embedding.unsqueeze(0))[0][0] if self.lstm is not None else embedding
        return self.mlp(x)
