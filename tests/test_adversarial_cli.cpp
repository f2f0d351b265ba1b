// The adversarial example end to end on a generated MNIST-format set: trains the five networks
// for one epoch, attacks a few test images, writes the table, CSV and PNG, reloads what it saved,
// and rejects bad arguments and existing outputs with exit status 2. The executable's path comes
// from VARNET_ADVERSARIAL (set by CMake); without it the test is skipped with a warning.
#include <algorithm>
#include <cstdio>
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

// The CSV row of one model, attack and epsilon: "accuracy,nll".
std::string result_of(const std::string& csv, const std::string& model, const std::string& attack,
                      const std::string& eps) {
  const std::string prefix = model + "," + attack + "," + eps + ",";
  const size_t at = csv.find("\n" + prefix);
  REQUIRE(at != std::string::npos);
  const size_t from = at + 1 + prefix.size();
  return csv.substr(from, csv.find('\n', from) - from);
}

// The table line the example prints for a model and attack, from the CSV's accuracies.
std::string table_line(const std::string& csv, const std::string& model,
                       const std::string& attack) {
  std::string line = "| " + model + " | " + attack + " |";
  for (const char* eps : {"0", "0.4"}) {
    char cell[32];
    std::snprintf(cell, sizeof cell, " %.3f |", std::stod(result_of(csv, model, attack, eps)));
    line += cell;
  }
  return line;
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
  // Epsilon 0.4 changes most models' accuracies, so that the table's columns can be told apart.
  const std::string base =
      "--data " + dir.path.string() + " --epochs 1 --test-limit 16 --eps 0,0.4 --pgd-iters 2";
  // `base` with each of these flags: the runs below change one of them.
  const auto with = [&](const std::string& batch, const std::string& attack_samples,
                        const std::string& samples, const fs::path& to) {
    return base + " --batch " + batch + " --attack-samples " + attack_samples + " --samples " +
           samples + " --out " + to.string();
  };
  const std::string common = with("32", "2", "2", out);

  const Run ok = run(common + " --save-dir " + models.string(), log);
  INFO(ok.out);
  REQUIRE(ok.status == 0);
  CHECK(ok.out.find("vdo final log alpha: conv1") != std::string::npos);
  CHECK(ok.out.find("| model | attack | eps 0 | eps 0.4 |") != std::string::npos);
  CHECK(ok.out.find("| gdo | pgd |") != std::string::npos);
  // PGD: --pgd-iters steps of 2.5 epsilon / iterations.
  CHECK(ok.out.find("pgd  epsilon 0.4   accuracy") != std::string::npos);
  CHECK(ok.out.find("(2 steps of 0.5 from a random start)") != std::string::npos);
  const std::string csv = fixture::read_file(out / "adversarial.csv");
  CHECK(csv.rfind("model,attack,epsilon,accuracy,nll\n", 0) == 0);
  CHECK(std::count(csv.begin(), csv.end(), '\n') == 1 + 5 * 2 * 2);
  CHECK(fs::file_size(out / "adversarial.png") > 1000);
  CHECK(fs::exists(models / "variance.safetensors"));
  // The table holds the CSV's accuracies, one column per epsilon.
  for (const char* model : {"variance", "deterministic", "dropout", "gdo", "vdo"})
    for (const char* attack : {"fgsm", "pgd"})
      CHECK(ok.out.find(table_line(csv, model, attack)) != std::string::npos);
  // The KL term pulls variational dropout's log alpha (conv1's, the one stochastic layer) up
  // from -5; without it, the noise only costs the data term, which pulls it down.
  const std::string vdo = "vdo final log alpha: conv1 ";
  const size_t conv1 = ok.out.find(vdo);
  REQUIRE(conv1 != std::string::npos);
  CHECK(std::stod(ok.out.substr(conv1 + vdo.size())) > -5);

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
    // The attacker's noise samples (--attack-samples) change the attacked images, not the clean
    // evaluation; the ensemble size (--samples) changes the clean evaluation.
    const Run attack1 = run(
        with("32", "1", "2", out) + " --overwrite --models variance --load-dir " + models.string(),
        log);
    INFO(attack1.out);
    REQUIRE(attack1.status == 0);
    const std::string one_attack_sample = fixture::read_file(out / "adversarial.csv");
    CHECK(result_of(one_attack_sample, "variance", "fgsm", "0") ==
          result_of(csv, "variance", "fgsm", "0"));
    CHECK(result_of(one_attack_sample, "variance", "fgsm", "0.4") !=
          result_of(csv, "variance", "fgsm", "0.4"));
    const Run samples1 = run(
        with("32", "2", "1", out) + " --overwrite --models variance --load-dir " + models.string(),
        log);
    INFO(samples1.out);
    REQUIRE(samples1.status == 0);
    CHECK(result_of(fixture::read_file(out / "adversarial.csv"), "variance", "fgsm", "0") !=
          result_of(csv, "variance", "fgsm", "0"));
    // A network of other layers than the saved one is refused, with the file named.
    const Run other =
        run(common + " --overwrite --models variance --var-layers 2 --load-dir " + models.string(),
            log);
    CHECK(other.status == 2);
    CHECK(other.out.find("variance.safetensors: expected a tensor named") != std::string::npos);
  }
  SECTION("saved networks are not replaced without --overwrite") {
    const Run again =
        run(with("32", "2", "2", dir.path / "out2") + " --save-dir " + models.string(), log);
    INFO(again.out);
    CHECK(again.status == 2);
    CHECK(again.out.find("--save-dir: expected a directory without earlier results") !=
          std::string::npos);
    CHECK(again.out.find("epoch") == std::string::npos);
  }
  SECTION("bad arguments exit with status 2 and say what was expected") {
    const Run eps = run(
        "--data " + dir.path.string() + " --out " + out.string() + " --overwrite --eps 0,-1", log);
    CHECK(eps.status == 2);
    CHECK(eps.out.find("--eps: expected comma-separated numbers in [0, 1], found '-1'") !=
          std::string::npos);
    const Run model = run(common + " --overwrite --models variance,magic", log);
    CHECK(model.status == 2);
    CHECK(model.out.find("'magic'") != std::string::npos);
    const Run unknown = run(common + " --epoch 3", log);
    CHECK(unknown.status == 2);
    const Run batch = run(with("512", "2", "2", out) + " --overwrite --models variance", log);
    INFO(batch.out);
    CHECK(batch.status == 2);
    CHECK(batch.out.find("--batch: expected at most the training set size 256") !=
          std::string::npos);
  }
}
