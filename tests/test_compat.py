"""Each BenCo 0.1.45 fix in imdlbenco_maskclip.compat: the stock behaviour fails, the fixed one works."""
import argparse
import os

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

import IMDLBenCo.training_scripts.utils.misc as misc
from IMDLBenCo.evaluation import ImageAccuracy, ImageAUC, ImageF1
from IMDLBenCo.training_scripts.trainer import train_one_epoch

from imdlbenco_maskclip import compat
from imdlbenco_maskclip.engine import runtime
from imdlbenco_maskclip.engine.training import loss_scaler

no_cuda = pytest.mark.skipif(torch.cuda.is_available(), reason="shows a failure that only a CPU-only machine has")


pytestmark = pytest.mark.usefixtures("no_process_group_left_behind")


def single_process_args():
    return argparse.Namespace(device="cpu", dist_url="env://")


def hand_f1(pred, label):
    tp = ((pred > 0.5) & (label == 1)).sum().item()
    fp = ((pred > 0.5) & (label == 0)).sum().item()
    fn = ((pred <= 0.5) & (label == 1)).sum().item()
    return 2 * tp / (2 * tp + fp + fn)


def test_image_evaluators_need_the_single_process_group():
    pred = torch.tensor([0.9, 0.2, 0.7, 0.4, 0.6])
    label = torch.tensor([1, 0, 0, 1, 1])
    stock = ImageF1()
    stock.batch_update(pred, label)
    with pytest.raises((RuntimeError, ValueError)):
        stock.epoch_update()  # dist.all_gather without any process group

    args = single_process_args()
    assert compat.init_distributed_mode(args) == torch.device("cpu")
    assert args.distributed is False and args.world_size == 1 and dist.get_backend() == "gloo"
    f1, acc, auc = ImageF1(), ImageAccuracy(), ImageAUC()
    for evaluator in (f1, acc, auc):
        evaluator.batch_update(pred, label)
    assert f1.epoch_update().item() == pytest.approx(hand_f1(pred, label), abs=1e-6)
    assert float(acc.epoch_update()) == pytest.approx(3 / 5)
    # AUC as the share of (positive, negative) pairs ranked right: 0.9 beats both negatives,
    # 0.4 and 0.6 beat only 0.2
    assert float(auc.epoch_update()) == pytest.approx(4 / 6)


@pytest.fixture
def two_fake_gpus(monkeypatch):
    """CUDA as init_distributed_mode sees it on a two-GPU machine, without a GPU: the device
    it makes current and the process group it asks for are recorded, not set up."""
    calls = {"set_device": [], "init_process_group": []}
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "set_device", calls["set_device"].append)
    monkeypatch.setattr(dist, "init_process_group", lambda **kwargs: calls["init_process_group"].append(kwargs))
    monkeypatch.setattr(dist, "barrier", lambda: None)
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    return calls


def test_an_explicit_cuda_index_wins_in_one_process(two_fake_gpus):
    args = argparse.Namespace(device="cuda:1", dist_url="env://")
    assert compat.init_distributed_mode(args) == torch.device("cuda", 1)
    assert two_fake_gpus["set_device"] == [1] and args.gpu == 1
    assert two_fake_gpus["init_process_group"][0]["backend"] == "nccl"

    args = argparse.Namespace(device="cuda", dist_url="env://")
    assert compat.init_distributed_mode(args) == torch.device("cuda", 0)
    assert two_fake_gpus["set_device"][-1] == 0


def test_under_torchrun_each_process_uses_gpu_local_rank(two_fake_gpus, monkeypatch):
    monkeypatch.setenv("RANK", "3")
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("LOCAL_RANK", "1")  # second process of the second node
    args = argparse.Namespace(device="cuda", dist_url="env://")
    assert compat.init_distributed_mode(args) == torch.device("cuda", 1)
    assert args.distributed and two_fake_gpus["set_device"] == [1]
    assert two_fake_gpus["init_process_group"][0]["rank"] == 3

    # Every rank gets the same --device, so an index would put them all on one GPU.
    with pytest.raises(ValueError, match="^--device cuda:0: .*4 torchrun processes.*--device cuda"):
        compat.init_distributed_mode(argparse.Namespace(device="cuda:0", dist_url="env://"))


def test_a_gpu_that_is_not_there_is_named(two_fake_gpus):
    with pytest.raises(ValueError, match=r"^--device cuda:2: .*GPU 2, but only 2 GPU"):
        compat.init_distributed_mode(argparse.Namespace(device="cuda:2", dist_url="env://"))
    assert two_fake_gpus["set_device"] == []


def test_metric_logger_synchronises_on_gloo():
    compat.init_distributed_mode(single_process_args())
    meter = misc.SmoothedValue()
    meter.update(3.0, n=2)
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):
            compat.ORIGINALS["synchronize_between_processes"](meter)  # device='cuda'
    meter.synchronize_between_processes()
    assert (meter.count, meter.total) == (2, 3.0)


@no_cuda
def test_cuda_synchronize_is_a_no_op_without_cuda():
    with pytest.raises((RuntimeError, AssertionError)):
        torch.cuda.synchronize()
    compat.apply_patches()
    assert torch.cuda.synchronize() is None  # the patched one, as BenCo's trainer calls it


class _TinySegmenter(torch.nn.Module):
    """Just enough of BenCo's model contract to drive train_one_epoch."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 1, 3, padding=1)

    def forward(self, image, mask, **kwargs):
        logits = self.conv(image)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, mask)
        return {"backward_loss": loss, "visual_loss": {"loss": loss.detach()},
                "pred_mask": torch.sigmoid(logits)}


def test_benco_train_one_epoch_runs_on_cpu_in_one_process():
    args_ns = single_process_args()
    compat.init_distributed_mode(args_ns)
    torch.manual_seed(0)
    images = torch.randn(8, 3, 16, 16)
    masks = (images[:, :1] > 0).float()
    loader = [{"image": images[i:i + 2], "mask": masks[i:i + 2]} for i in range(0, 8, 2)]
    model = _TinySegmenter()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.5)
    train_args = argparse.Namespace(if_not_amp=True, accum_iter=1, if_predict_label=False, lr=0.5,
                                    min_lr=0.0, warmup_epochs=0, epochs=3)
    before = model.conv.weight.detach().clone()
    losses = [train_one_epoch(model, loader, optimizer, torch.device("cpu"), epoch,
                              loss_scaler(torch.device("cpu")), args=train_args)["loss"]
              for epoch in range(3)]
    assert not torch.equal(before, model.conv.weight)
    assert losses[-1] < losses[0]


def _two_rank_worker(rank, port, results):
    torch.set_num_threads(runtime.cpu_threads_per_process(2))  # not conftest's OMP_NUM_THREADS in each of 2
    os.environ.update(RANK=str(rank), WORLD_SIZE="2", LOCAL_RANK=str(rank),
                      MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    compat.apply_patches()
    outcome = {}
    if not torch.cuda.is_available():
        try:  # BenCo's own: torch.cuda.set_device + NCCL
            compat.ORIGINALS["init_distributed_mode"](argparse.Namespace(dist_on_itp=False, dist_url="env://"))
            outcome["stock_init"] = "ran"
        except Exception as error:  # noqa: BLE001 - any failure is the point
            outcome["stock_init"] = type(error).__name__
    args = argparse.Namespace(device="cpu", dist_url="env://")
    compat.init_distributed_mode(args)
    outcome["distributed"] = args.distributed
    try:
        compat.ORIGINALS["all_reduce_mean"](float(rank))
        outcome["stock_all_reduce"] = "ran"
    except Exception as error:  # noqa: BLE001
        outcome["stock_all_reduce"] = type(error).__name__
    outcome["mean"] = misc.all_reduce_mean(float(rank + 1))
    meter = misc.SmoothedValue()
    meter.update(float(rank + 1), n=rank + 1)
    meter.synchronize_between_processes()
    outcome["meter"] = (meter.count, meter.total)
    preds = [torch.tensor([0.9, 0.2, 0.7]), torch.tensor([0.4, 0.6, 0.1])][rank]
    labels = [torch.tensor([1, 0, 0]), torch.tensor([1, 1, 0])][rank]
    f1 = ImageF1()
    f1.batch_update(preds, labels)
    outcome["f1"] = float(f1.epoch_update())
    results[rank] = outcome
    dist.destroy_process_group()


def test_two_cpu_processes_reduce_and_gather_over_gloo(free_port, monkeypatch):
    # The workers see no GPU, as on a CPU-only machine: BenCo's own calls (set_device + NCCL,
    # .cuda() before a gloo all-reduce) then fail alike on every host.
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "")
    results = mp.Manager().dict()
    mp.spawn(_two_rank_worker, args=(free_port, results), nprocs=2, join=True)
    everything_pred = torch.tensor([0.9, 0.2, 0.7, 0.4, 0.6, 0.1])
    everything_label = torch.tensor([1, 0, 0, 1, 1, 0])
    for rank in (0, 1):
        outcome = results[rank]
        assert outcome["distributed"] is True
        assert outcome["stock_init"] != "ran"
        assert outcome["stock_all_reduce"] != "ran"
        assert outcome["mean"] == pytest.approx(1.5)
        assert outcome["meter"] == (3, 3.0)
        assert outcome["f1"] == pytest.approx(hand_f1(everything_pred, everything_label), abs=1e-6)


class TinyCatNetwork(torch.nn.Module):
    """In place of CAT-Net's HRNet (114M parameters): the same call, two-class logits."""

    def __init__(self, cfg=None):
        super().__init__()
        self.conv = torch.nn.Conv2d(24, 2, 1)

    def forward(self, x, qtables):
        return self.conv(x)


def cat_net_batch():
    return dict(image=torch.rand(2, 3, 16, 16) * 255, mask=torch.randint(0, 2, (2, 1, 16, 16)).float(),
                DCT_coef=torch.randint(-30, 30, (2, 16, 16)).float(), qtables=torch.rand(2, 8, 8))


def test_cat_net_builds_and_runs_on_the_device_of_its_input(monkeypatch):
    import IMDLBenCo.model_zoo.cat_net.cat_net as cat_net
    from imdlbenco_maskclip.engine.models import FLAG_DEFAULTS
    monkeypatch.setattr(cat_net, "get_seg_model", TinyCatNetwork)
    config = FLAG_DEFAULTS["Cat_Net"]["cfg_file"]
    if not torch.cuda.is_available():
        with pytest.raises((RuntimeError, AssertionError)):  # no CUDA driver / torch without CUDA
            cat_net.Cat_Net(config)  # its loss weights .cuda()
    compat.apply_patches()
    model = cat_net.Cat_Net(config)
    assert model.loss.criterion.weight.device.type == "cpu"
    with pytest.raises((RuntimeError, AssertionError)):
        # its DCT volume .cuda(): no driver here, or a GPU tensor beside the CPU image elsewhere
        compat.ORIGINALS["cat_net_forward"](model, **cat_net_batch())
    output = model(**cat_net_batch())
    output["backward_loss"].backward()
    assert output["pred_mask"].device.type == "cpu" and model.model.conv.weight.grad is not None


def test_trufor_phase_3_loss_compares_label_and_prediction_of_one_shape():
    from IMDLBenCo.model_zoo.trufor.trufor import Trufor
    pred, label = torch.tensor([0.9, 0.2, 0.6]), torch.tensor([1.0, 0.0, 0.0])
    with pytest.raises(ValueError, match="target size"):
        Trufor.detection_loss(None, pred, label)
    compat.apply_patches()
    expected = -(torch.log(pred[0]) + torch.log(1 - pred[1]) + torch.log(1 - pred[2])) / 3
    assert Trufor.detection_loss(None, pred, label).item() == pytest.approx(expected.item())
@pytest.fixture
def torchrun_env(monkeypatch, free_port):
    """The environment torchrun --nproc_per_node=1 gives its one process."""
    for name, value in dict(RANK="0", WORLD_SIZE="1", LOCAL_RANK="0", MASTER_ADDR="127.0.0.1",
                            MASTER_PORT=str(free_port)).items():
        monkeypatch.setenv(name, value)


def stock_script_args(device):
    return argparse.Namespace(device=device, dist_on_itp=False, dist_url="env://")


def test_stock_scripts_init_uses_gloo_for_a_cpu_device_under_torchrun(torchrun_env):
    compat.apply_patches()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError):  # torch.cuda.set_device without a CUDA driver
            compat.ORIGINALS["init_distributed_mode"](stock_script_args("cpu"))
    args = stock_script_args("cpu")
    misc.init_distributed_mode(args)  # as BenCo's train.py / test.py / test_robust.py call it
    # BenCo's meaning: distributed under torchrun even with one process (the stock scripts
    # read global_rank and model.module only then).
    assert args.distributed is True and (args.rank, args.world_size) == (0, 1)
    assert dist.get_backend() == "gloo" and dist.get_world_size() == 1


def test_stock_scripts_init_is_bencos_own_for_a_cuda_device(two_fake_gpus, torchrun_env, monkeypatch):
    monkeypatch.setenv("LOCAL_RANK", "1")
    compat.apply_patches()
    args = stock_script_args("cuda")
    misc.init_distributed_mode(args)
    assert args.distributed is True and args.dist_backend == "nccl"
    assert two_fake_gpus["set_device"] == [1]
    assert two_fake_gpus["init_process_group"][0]["backend"] == "nccl"


def test_ddp_takes_the_stock_scripts_device_ids_for_a_cpu_module():
    compat.init_distributed_mode(single_process_args())
    module = torch.nn.Linear(3, 1)
    with pytest.raises(ValueError, match="device_ids"):
        compat.ORIGINALS["DistributedDataParallel"](module, device_ids=[0])
    model = torch.nn.parallel.DistributedDataParallel(module, device_ids=[0])  # as the stock scripts do
    assert isinstance(model, compat.ORIGINALS["DistributedDataParallel"]) and model.module is module
    assert model.device_ids is None
    model(torch.ones(2, 3)).sum().backward()
    assert module.weight.grad.tolist() == [[2.0, 2.0, 2.0]]


def test_ddp_keeps_device_ids_for_a_module_off_the_cpu(monkeypatch):
    compat.apply_patches()
    seen = {}
    monkeypatch.setattr(compat.ORIGINALS["DistributedDataParallel"], "__init__",
                        lambda self, module, device_ids=None, output_device=None, *a, **k:
                        seen.update(device_ids=device_ids, output_device=output_device))
    torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(3, 1, device="meta"), device_ids=[1])
    assert seen == {"device_ids": [1], "output_device": None}


def test_a_batchnorm_trains_under_ddp_on_the_cpu_as_the_stock_train_py_wraps_it():
    """The stock train.py converts every BatchNorm to SyncBatchNorm under torchrun, then wraps DDP."""
    compat.init_distributed_mode(single_process_args())
    # (torch's converts the children of a module through the patched one: a bare BatchNorm here)
    with pytest.raises(ValueError):
        torch.nn.parallel.DistributedDataParallel(compat.ORIGINALS["convert_sync_batchnorm"](torch.nn.BatchNorm2d(4)))
    model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(torch.nn.Sequential(torch.nn.BatchNorm2d(4)))
    assert type(model[0]) is torch.nn.BatchNorm2d
    image = torch.randn(2, 4, 5, 5) * 3 + 1
    torch.nn.parallel.DistributedDataParallel(model)(image).pow(2).sum().backward()
    assert torch.allclose(model[0].running_mean, 0.1 * image.mean(dim=(0, 2, 3)), atol=1e-6)
    assert model[0].weight.grad.abs().sum() > 0


def test_trufor_reads_weight_files_saved_from_a_gpu_on_a_machine_without_one(tmp_path, monkeypatch):
    from IMDLBenCo.model_zoo.trufor.trufor import Trufor, config, confcmx, update_config
    from imdlbenco_maskclip.engine.models import FLAG_DEFAULTS
    config_path = FLAG_DEFAULTS["Trufor"]["config_path"]
    update_config(config, None, config_path)
    noiseprint = {k: torch.randn_like(v) if v.is_floating_point() else v
                  for k, v in confcmx(cfg=config).dncnn.state_dict().items()}
    with monkeypatch.context() as saving_from_a_gpu:  # every storage tagged cuda:0, as torch.save writes CUDA tensors
        saving_from_a_gpu.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")
        torch.save(noiseprint, tmp_path / "noiseprint.pth")
        torch.save({}, tmp_path / "mit_b2.pth")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    files = dict(phase=2, np_pretrain_weights=str(tmp_path / "noiseprint.pth"),
                 mit_b2_pretrain_weights=str(tmp_path / "mit_b2.pth"), config_path=config_path)
    with pytest.raises(RuntimeError, match="CUDA"):
        Trufor(**files)
    load = torch.load
    compat.apply_patches()
    model = Trufor(**files)
    assert all(torch.equal(model.model.dncnn.state_dict()[k], v) for k, v in noiseprint.items())
    assert torch.load is load  # the CPU default holds inside TruFor's constructor only
