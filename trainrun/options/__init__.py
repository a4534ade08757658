"""The options' builders, one module per config group (mirroring conf/): what `model=cnn` or `optimizer=adam`
builds. Each option's record (builder path, knobs, traits) is in ../registry.py; a builder here takes the knobs
the record names and returns the torch object."""
