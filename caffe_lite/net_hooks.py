"""Net forward hooks: where a fork watches or changes a forward pass layer by layer.

caffe-jacinto's quantization records the range of every layer's inputs and outputs and then
rounds them to fixed point; it needs to act between two layers of a forward pass, in every
net (train, test, deploy under `caffe-lite test` and `time`), whatever runs the net.

A hook is an object with any of these methods (NetHook has them all as no-ops):

  attach(net)                 once, when the hook is added to the net
  before_forward(net)         at the start of each forward pass that begins at the first
                              layer (Net.forward_from_to with start 0)
  after_layer(net, layer_id)  after that layer's forward; its tops are
                              net._layer_records[layer_id].tops and may be changed in place

Hooks come from net.add_forward_hook(hook) and from factories registered with
@net_hook_factory, called for every new Net with its filtered NetParameter; a factory returns
a hook (or None) when the net's fields ask for one. A Net without hooks runs its plain loop.
"""
HOOK_FACTORIES = []


def net_hook_factory(fn):
    """Register fn(net_param) -> hook | None, called for every new Net."""
    if fn not in HOOK_FACTORIES:
        HOOK_FACTORIES.append(fn)
    return fn


def hooks_for(net_param):
    from .plugins import load_plugins
    load_plugins()
    hooks = []
    for factory in HOOK_FACTORIES:
        made = factory(net_param)
        if made is not None:
            hooks.extend(made if isinstance(made, (list, tuple)) else [made])
    return hooks


class NetHook:
    """Base class with every hook method as a no-op; subclass and override what you need."""

    def attach(self, net):
        pass

    def before_forward(self, net):
        pass

    def after_layer(self, net, layer_id):
        pass
