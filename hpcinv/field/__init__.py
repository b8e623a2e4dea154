"""Field data: shot gathers read from SEG-Y with their geometry (:mod:`.segy`), conditioned as a data
config says (:mod:`.condition`), and a classical velocity analysis to check a model against
(:mod:`.velan`)."""
