# Image data sets, prepared once per data directory (not per seed) by torchvision's data set
# classes, which download and check them; offline, the job stops with one message naming the
# directory and the files expected there (latentstates.tasks.image_data). Local rules: cluster nodes
# are often offline.
localrules:
    prepare_mnist,
    prepare_cifar100,


rule prepare_mnist:
    output:
        image_files("mnist", "{data_dir}"),
    log:
        "{data_dir}/prepare_mnist.log",
    conda:
        "../envs/data.yaml"
    params:
        dataset="mnist",
    script:
        "../workflow/scripts/prepare_data.py"


rule prepare_cifar100:
    output:
        image_files("cifar100", "{data_dir}"),
    log:
        "{data_dir}/prepare_cifar100.log",
    conda:
        "../envs/data.yaml"
    params:
        dataset="cifar100",
    script:
        "../workflow/scripts/prepare_data.py"
