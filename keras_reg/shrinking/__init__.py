"""Shrinking: zero units and filters become a physically smaller model with the same outputs.

The engine, in the order it runs:

- `graph`: the model's calls, producers first, nested models inlined;
- `channels`: the channel dependency graph (spaces, joins, states) and which
  channels can go, each layer's part asked of its rule (`keras_reg.rules`);
- `plan`: each layer's new config and weights (`ShrinkPlan`), from its rule;
- `build`: the new model from the plan, checked against the original;
- `prune`: structured pruning of coupled channel groups to a MACs target
  (`prune_channels`), which zeroes whole groups and lets `shrink` remove them.

`keras_reg.shrink` is the function `shrink` here, not this package.
"""

from keras_reg.shrinking.build import shrink
from keras_reg.shrinking.plan import LayerChange, ShrinkPlan, plan_shrink
from keras_reg.shrinking.prune import ChannelGroup, ChannelPlan, plan_channels, prune_channels

__all__ = [
    "ChannelGroup",
    "ChannelPlan",
    "LayerChange",
    "ShrinkPlan",
    "plan_channels",
    "plan_shrink",
    "prune_channels",
    "shrink",
]
