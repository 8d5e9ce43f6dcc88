"""Tasks: data sets, models, seed-batched replicas and the task registry.

Modules:
    registry        each kind of experiment: how to build its data, model, loss and matrices
    data            the paper's data sets: synthetic ones from a seed, the bundled digits
    image_data      MNIST and CIFAR-100 read from torchvision's files, checked as they are read
    prepare         fetching the image data sets (rule prepare_<dataset>)
    models          the paper's models
    replicas        a seed group's models stacked along a leading dimension and run as one
    stacked_resnet  a seed group's ResNet18s as one network of grouped convolutions
    exact_hessian   Hessians a task knows in closed form, and the eigenpair every method returns
"""

from latentstates._lazy import exports

__all__, __getattr__, __dir__ = exports(
    __name__,
    {
        "TaskKind": ".registry",
        "TASKS": ".registry",
        "get_task": ".registry",
        "register": ".registry",
    },
)
