// Kill and resume, end to end: the lenet5 example trains 2 epochs straight; a second run with
// --checkpoint is killed (SIGKILL) in its second epoch and resumed with --resume; the models both
// save with --save must be identical bit for bit. The executable's path comes from VARNET_LENET5
// (set by CMake); without it the test is skipped with a warning.
#include <fcntl.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>
#include <zlib.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "catch.hpp"
#include "mnist_fixture.hpp"
#include "varnet/varnet.hpp"

namespace fs = std::filesystem;

namespace {

using fixture::TempDir;
using fixture::write_set;

std::vector<std::string> split(const std::string& args) {
  std::istringstream in(args);
  std::vector<std::string> out;
  for (std::string w; in >> w;) out.push_back(w);
  return out;
}

// Starts lenet5 with `args`, stdout and stderr to `log`.
pid_t start(const std::string& args, const fs::path& log) {
  const std::string exe = std::getenv("VARNET_LENET5");
  std::vector<std::string> words = split(args);
  words.insert(words.begin(), exe);
  const pid_t pid = ::fork();
  REQUIRE(pid >= 0);
  if (pid == 0) {
    const int fd = ::open(log.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0) ::_exit(127);
    ::dup2(fd, 1);
    ::dup2(fd, 2);
    std::vector<char*> argv;
    for (auto& w : words) argv.push_back(w.data());
    argv.push_back(nullptr);
    ::execv(exe.c_str(), argv.data());
    ::_exit(127);
  }
  return pid;
}

using fixture::Run;

Run run(const std::string& args, const fs::path& log) {
  const pid_t pid = start(args, log);
  int raw = 0;
  ::waitpid(pid, &raw, 0);
  return Run{WIFEXITED(raw) ? WEXITSTATUS(raw) : -1, fixture::read_file(log)};
}

// The step of the checkpoint at path, or -1 while there is none (or it is being replaced).
int64_t checkpoint_step(const fs::path& path) {
  std::error_code ec;
  if (!fs::exists(path, ec)) return -1;
  try {
    return int64_t(varnet::read_checkpoint(path.string()).info.step);
  } catch (const varnet::Error&) {
    return -1;
  }
}

}  // namespace

TEST_CASE("lenet5: killed in epoch 2 and resumed, it ends bit-identical to a straight run",
          "[cli][checkpoint]") {
  if (!std::getenv("VARNET_LENET5")) {
    WARN("VARNET_LENET5 is not set: kill-and-resume test skipped");
    return;
  }
  TempDir dir("varnet_resume_");
  // 1024 images in batches of 8: 128 steps per epoch.
  write_set(dir.path, "train", 1024, 20, 1);
  write_set(dir.path, "t10k", 64, 20, 2);
  const fs::path log = dir.path / "log.txt", ckpt = dir.path / "run.ckpt";
  const fs::path straight = dir.path / "straight.safetensors";
  const fs::path resumed = dir.path / "resumed.safetensors";
  const std::string common = "--data " + dir.path.string() +
                             " --epochs 2 --batch 8 --lr 0.003 --seed 3 --samples 1 "
                             "--eval-batch 64 --train-samples 2 ";
  const int64_t steps_per_epoch = 128;

  const Run a = run(common + "--save " + straight.string(), log);
  INFO(a.out);
  REQUIRE(a.status == 0);

  // The interrupted run: killed as soon as a checkpoint inside epoch 2 appears.
  const pid_t pid = start(common + "--checkpoint " + ckpt.string() + " --checkpoint-every 8", log);
  int64_t seen = -1;
  const auto deadline = std::chrono::steady_clock::now() + std::chrono::minutes(5);
  int raw = 0;
  bool exited = false;
  while (std::chrono::steady_clock::now() < deadline) {
    seen = checkpoint_step(ckpt);
    if (seen > steps_per_epoch) break;
    if (::waitpid(pid, &raw, WNOHANG) == pid) {
      exited = true;
      break;
    }
    std::this_thread::sleep_for(std::chrono::microseconds(500));
  }
  if (!exited) {
    ::kill(pid, SIGKILL);
    ::waitpid(pid, &raw, 0);
  }
  const std::string killed_out = fixture::read_file(log);
  INFO(killed_out);
  REQUIRE(WIFSIGNALED(raw));  // killed, not finished
  REQUIRE(WTERMSIG(raw) == SIGKILL);
  REQUIRE(seen > steps_per_epoch);
  REQUIRE(seen < 2 * steps_per_epoch);
  CHECK(killed_out.find("epoch 1/2") != std::string::npos);
  CHECK(killed_out.find("epoch 2/2") == std::string::npos);

  const Run b = run(common + "--resume " + ckpt.string() + " --checkpoint " + ckpt.string() +
                        " --checkpoint-every 8 --save " + resumed.string(),
                    log);
  INFO(b.out);
  REQUIRE(b.status == 0);
  CHECK(b.out.find("resumed at epoch 2, step ") != std::string::npos);
  CHECK(b.out.find("epoch 2/2") != std::string::npos);
  CHECK(b.out.find("epoch 1/2") == std::string::npos);
  // The resumed epoch's line counts the steps taken before the kill too.
  REQUIRE(!fixture::epoch_loss_line(a.out, "2/2").empty());
  CHECK(fixture::epoch_loss_line(b.out, "2/2") == fixture::epoch_loss_line(a.out, "2/2"));

  // Bit for bit: the whole files (tensors and metadata) are equal.
  const std::string want = fixture::read_file(straight), got = fixture::read_file(resumed);
  REQUIRE(want.size() > 100000);
  CHECK(want == got);
  // And the tensors one by one, for a readable failure.
  const auto fa = varnet::load_safetensors(straight.string());
  const auto fb = varnet::load_safetensors(resumed.string());
  REQUIRE(fa.tensors.size() == fb.tensors.size());
  for (size_t i = 0; i < fa.tensors.size(); ++i) {
    INFO(fa.tensors[i].name);
    CHECK(fa.tensors[i].bytes == fb.tensors[i].bytes);
  }

  {  // resuming a finished run only evaluates, with the same model
    const fs::path again = dir.path / "again.safetensors";
    const Run c = run(common + "--resume " + ckpt.string() + " --save " + again.string(), log);
    INFO(c.out);
    REQUIRE(c.status == 0);
    CHECK(c.out.find("training already complete") != std::string::npos);
    CHECK(fixture::read_file(again) == want);
  }
  {  // an earlier run's checkpoint is not replaced silently: only resuming it or --overwrite may
    const std::string before = fixture::read_file(ckpt);
    const fs::path other = dir.path / "copy.ckpt";
    const Run fresh = run(common + "--checkpoint " + ckpt.string(), log);
    INFO(fresh.out);
    CHECK(fresh.status == 2);
    CHECK(fresh.out.find("--checkpoint: expected a path without an earlier checkpoint (or "
                         "--resume it, or --overwrite), found an existing file") !=
          std::string::npos);
    fs::copy_file(ckpt, other);
    const Run elsewhere =
        run(common + "--resume " + other.string() + " --checkpoint " + ckpt.string(), log);
    CHECK(elsewhere.status == 2);
    CHECK(fixture::read_file(ckpt) == before);
  }
  {  // a resume with other settings is refused, naming them
    const std::string other = "--data " + dir.path.string() +
                              " --epochs 2 --batch 16 --lr 0.001 --seed 3 --samples 1 "
                              "--eval-batch 64 --train-samples 1 --kl-beta 2 --dist bernoulli "
                              "--resume " +
                              ckpt.string();
    const Run c = run(other, log);
    INFO(c.out);
    CHECK(c.status == 2);
    CHECK(c.out.find("expected a checkpoint of a run configured as this one") != std::string::npos);
    CHECK(c.out.find("batch \"8\" in the checkpoint, \"16\" in this run") != std::string::npos);
    CHECK(c.out.find("lr \"0.0030000000000000001\" in the checkpoint, \"0.001") !=
          std::string::npos);
    // Settings that leave the tensors as they are, so that only this comparison can tell.
    CHECK(c.out.find("train_samples \"2\" in the checkpoint, \"1\" in this run") !=
          std::string::npos);
    CHECK(c.out.find("kl_beta \"1\" in the checkpoint, \"2\" in this run") != std::string::npos);
    CHECK(c.out.find("dist \"gaussian\" in the checkpoint, \"bernoulli\" in this run") !=
          std::string::npos);
    const Run missing = run(common + "--resume " + (dir.path / "none.ckpt").string(), log);
    CHECK(missing.status == 2);
    CHECK(missing.out.find("none.ckpt: expected an existing safetensors file") !=
          std::string::npos);
  }
}
