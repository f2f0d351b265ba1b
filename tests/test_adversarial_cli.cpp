// The adversarial example end to end on a generated MNIST-format set: trains the five networks
// for one epoch, attacks a few test images, writes the table, CSV and PNG, reloads what it saved,
// and rejects bad arguments and existing outputs with exit status 2. The executable's path comes
// from VARNET_ADVERSARIAL (set by CMake); without it the test is skipped with a warning.
#include <algorithm>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <string>

#include "catch.hpp"
#include "mnist_fixture.hpp"

namespace fs = std::filesystem;

namespace {

using fixture::Run;

Run run(const std::string& args, const fs::path& log) {
  return fixture::run_program("VARNET_ADVERSARIAL", args, log);
}

// The CSV rows of one model.
std::string rows_of(const std::string& csv, const std::string& model) {
  std::string out, line;
  std::istringstream in(csv);
  while (std::getline(in, line))
    if (line.rfind(model + ",", 0) == 0) out += line + "\n";
  return out;
}

}  // namespace

TEST_CASE("adversarial: trains, attacks, writes table, CSV and plot; rejects bad input", "[cli]") {
  if (!std::getenv("VARNET_ADVERSARIAL")) {
    WARN("VARNET_ADVERSARIAL is not set: adversarial CLI test skipped");
    return;
  }
  fixture::TempDir dir("varnet_adv_cli_");
  fixture::write_set(dir.path, "train", 256, 20, 5);
  fixture::write_set(dir.path, "t10k", 64, 20, 6);
  const fs::path log = dir.path / "log.txt", out = dir.path / "out", models = dir.path / "models";
  const std::string common = "--data " + dir.path.string() +
                             " --epochs 1 --batch 32 --test-limit 16 --eps 0,0.1 "
                             "--attack-samples 2 --pgd-iters 2 --samples 2 --out " +
                             out.string();

  const Run ok = run(common + " --save-dir " + models.string(), log);
  INFO(ok.out);
  REQUIRE(ok.status == 0);
  CHECK(ok.out.find("vdo final log alpha: conv1") != std::string::npos);
  CHECK(ok.out.find("| model | attack | eps 0 | eps 0.1 |") != std::string::npos);
  CHECK(ok.out.find("| gdo | pgd |") != std::string::npos);
  const std::string csv = fixture::read_file(out / "adversarial.csv");
  CHECK(csv.rfind("model,attack,epsilon,accuracy,nll\n", 0) == 0);
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 1 + 5 * 2 * 2);
  CHECK(fs::file_size(out / "adversarial.png") > 1000);
  CHECK(fs::exists(models / "variance.safetensors"));

  SECTION("existing outputs are refused before training, --overwrite allows them") {
    const Run again = run(common, log);
    CHECK(again.status == 2);
    CHECK(again.out.find("--overwrite") != std::string::npos);
    CHECK(again.out.find("epoch") == std::string::npos);
  }
  SECTION("--load-dir evaluates the saved networks without training, to the same numbers") {
    const Run loaded =
        run(common + " --overwrite --models variance,vdo --load-dir " + models.string(), log);
    INFO(loaded.out);
    REQUIRE(loaded.status == 0);
    CHECK(loaded.out.find("epoch") == std::string::npos);
    const std::string again = fixture::read_file(out / "adversarial.csv");
    CHECK(rows_of(again, "variance") == rows_of(csv, "variance"));
    CHECK(rows_of(again, "vdo") == rows_of(csv, "vdo"));
  }
  SECTION("bad arguments exit with status 2 and say what was expected") {
    const Run eps = run(common + " --overwrite --eps 0,-1", log);
    CHECK(eps.status == 2);
    CHECK(eps.out.find("--eps") != std::string::npos);
    const Run model = run(common + " --overwrite --models variance,magic", log);
    CHECK(model.status == 2);
    CHECK(model.out.find("'magic'") != std::string::npos);
    const Run unknown = run(common + " --epoch 3", log);
    CHECK(unknown.status == 2);
  }
}
