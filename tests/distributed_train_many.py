"""`caffe-lite train -solver S` for each solver named, one after the other in one process:
one mpiexec launch for several trainings (the tests pay the interpreter start once).

    mpiexec -n 2 python tests/distributed_train_many.py a.prototxt b.prototxt
"""
import sys

from caffe_lite.cli import main

if __name__ == "__main__":
    sys.exit(max(main(["train", "-solver", solver]) for solver in sys.argv[1:]))
