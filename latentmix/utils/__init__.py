"""Support every layer uses: input checks that name the argument (``validation``), crash-safe writes
(``atomic``), writer locks (``locks``), pictures (``viz``), videos (``video``) and the run device (``device``).

Nothing is imported here, so ``latentmix.utils.validation`` stays a standard-library import.
"""
