"""Reading pickles from elsewhere (CIFAR-10 batches, EDM2's reference statistics) without letting them run code."""
import pickle


class ArrayUnpickler(pickle.Unpickler):
    """Rebuilds dicts, lists and numpy arrays only: a downloaded pickle must not be able to run code."""
    NUMPY_NAMES = {"_reconstruct", "ndarray", "dtype", "_frombuffer", "scalar"}

    def find_class(self, module, name):
        numpy_part = module.split(".")[0] == "numpy" and name in self.NUMPY_NAMES
        if numpy_part or (module, name) == ("_codecs", "encode"):  # protocol 2 pickles bytes via _codecs.encode
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"{module}.{name} is refused: only arrays and plain containers are loaded")
