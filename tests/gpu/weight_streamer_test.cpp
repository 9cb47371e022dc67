// The weight streamer's ring: bytes of many layer images arrive intact through a few staging
// slots, in schedule order and for shuffled schedules, with every option (slots, depth, chunks,
// overlap off), over back-to-back passes, and inside a captured CUDA graph whose replays pick up
// new host contents. The "compute" reads each slot with device-to-device copies on the compute
// stream (several, so it lasts while the copy stream runs ahead).
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <numeric>
#include <vector>

#include "engine/cuda/weight_streamer.h"
#include "tests/gpu/gpu_test_util.h"

namespace pipellm {
namespace {

using cuda::LayerImage;
using cuda::LayerStreamer;
using cuda::MappedHostBuffer;
using cuda::StreamerOptions;

struct Images {
  MappedHostBuffer host;
  std::vector<size_t> offset, bytes;

  explicit Images(const std::vector<size_t>& sizes) {
    size_t total = 0;
    for (size_t s : sizes) {
      offset.push_back(total);
      bytes.push_back(s);
      total += (s + 255) / 256 * 256;
    }
    host = MappedHostBuffer(total);
    refill();
  }
  void refill() {
    for (size_t i = 0; i < host.bytes(); ++i) host.host()[i] = static_cast<uint8_t>(test::rng()());
  }
  LayerImage image(size_t i) const { return {host.host() + offset[i], bytes[i]}; }
  const uint8_t* data(size_t i) const { return host.host() + offset[i]; }
};

std::vector<size_t> sizes(int n) {
  std::vector<size_t> s;
  for (int i = 0; i < n; ++i) s.push_back((1u << 20) + static_cast<size_t>(test::rng()() % (3u << 20)) + (i % 3));
  return s;
}

// One pass: each position's slot is copied `reads` times into out[p] on the compute stream.
void pass(LayerStreamer& st, cudaStream_t s, const std::vector<cuda::DeviceBuffer<uint8_t>>& out,
          const std::vector<size_t>& bytes_of_position, int reads) {
  st.begin_pass(s);
  for (int p = 0; p < st.positions(); ++p) {
    st.before(p, s);
    for (int r = 0; r < reads; ++r)
      PIPELLM_CUDA_CHECK(cudaMemcpyAsync(out[static_cast<size_t>(p)].get(), st.slot_data(p),
                                         bytes_of_position[static_cast<size_t>(p)], cudaMemcpyDeviceToDevice, s));
    st.after(p, s);
  }
  st.end_pass(s);
}

struct Case {
  int slots, depth;
  size_t chunk;
  bool overlap;
};

void check_schedule(const Images& im, const std::vector<size_t>& order, const Case& c, int passes) {
  std::vector<LayerImage> schedule;
  std::vector<size_t> bytes;
  for (size_t i : order) {
    schedule.push_back(im.image(i));
    bytes.push_back(im.bytes[i]);
  }
  StreamerOptions o;
  o.slots = c.slots;
  o.depth = c.depth;
  o.chunk_bytes = c.chunk;
  o.overlap = c.overlap;
  LayerStreamer st(schedule, o);
  EXPECT_EQ(st.slots(), std::min<int>(c.slots, static_cast<int>(order.size())));
  cuda::Stream s;
  for (int it = 0; it < passes; ++it) {
    std::vector<cuda::DeviceBuffer<uint8_t>> out;
    for (size_t b : bytes) {
      out.emplace_back(b);
      PIPELLM_CUDA_CHECK(cudaMemsetAsync(out.back().get(), 0xA5, b, s.get()));  // poison
    }
    pass(st, s.get(), out, bytes, 4);
    s.synchronize();
    for (size_t p = 0; p < order.size(); ++p) {
      std::vector<uint8_t> got(bytes[p]);
      PIPELLM_CUDA_CHECK(cudaMemcpy(got.data(), out[p].get(), bytes[p], cudaMemcpyDeviceToHost));
      ASSERT_EQ(0, std::memcmp(got.data(), im.data(order[p]), bytes[p]))
          << "pass " << it << " position " << p << " (image " << order[p] << "), slots " << c.slots << " depth "
          << c.depth << " chunk " << c.chunk << " overlap " << c.overlap;
    }
  }
}

const Case kCases[] = {{2, 0, 0, true}, {2, 1, 0, true}, {3, 0, 0, true},      {3, 2, 1 << 20, true},
                       {4, 0, 0, true}, {2, 0, 0, false}, {1, 0, 0, true},     {5, 5, 300000, true}};

TEST(WeightStreamer, BytesArriveInScheduleOrder) {
  PIPELLM_REQUIRE_GPU();
  Images im(sizes(24));
  std::vector<size_t> order(24);
  std::iota(order.begin(), order.end(), 0);
  for (const Case& c : kCases) check_schedule(im, order, c, 3);
}

TEST(WeightStreamer, BytesArriveForShuffledSchedules) {
  PIPELLM_REQUIRE_GPU();
  Images im(sizes(17));
  for (int k = 0; k < 3; ++k) {
    std::vector<size_t> order(17);
    std::iota(order.begin(), order.end(), 0);
    std::shuffle(order.begin(), order.end(), test::rng());
    order.resize(static_cast<size_t>(9 + 4 * k));  // a subset too
    for (const Case& c : kCases) check_schedule(im, order, c, 2);
  }
}

TEST(WeightStreamer, GraphReplayStreamsFreshHostBytes) {
  PIPELLM_REQUIRE_GPU();
  Images im(sizes(10));
  std::vector<LayerImage> schedule;
  std::vector<size_t> bytes;
  for (size_t i = 0; i < 10; ++i) {
    schedule.push_back(im.image(i));
    bytes.push_back(im.bytes[i]);
  }
  for (bool overlap : {true, false}) {
    StreamerOptions o;
    o.slots = 3;
    o.overlap = overlap;
    LayerStreamer st(schedule, o);
    cuda::Stream s;
    std::vector<cuda::DeviceBuffer<uint8_t>> out;
    for (size_t b : bytes) out.emplace_back(b);
    cudaGraph_t g = nullptr;
    PIPELLM_CUDA_CHECK(cudaStreamBeginCapture(s.get(), cudaStreamCaptureModeThreadLocal));
    pass(st, s.get(), out, bytes, 2);
    PIPELLM_CUDA_CHECK(cudaStreamEndCapture(s.get(), &g));
    size_t n_nodes = 0;
    PIPELLM_CUDA_CHECK(cudaGraphGetNodes(g, nullptr, &n_nodes));
    EXPECT_GE(n_nodes, 10u * 3u);  // 10 host copies + 20 reads at least
    cuda::GraphExec exec(g);
    for (int replay = 0; replay < 4; ++replay) {
      s.synchronize();
      im.refill();  // new contents: a replay must copy them again
      for (auto& b : out) PIPELLM_CUDA_CHECK(cudaMemsetAsync(b.get(), 0x5A, b.bytes(), s.get()));
      exec.launch(s.get());
      s.synchronize();
      for (size_t p = 0; p < bytes.size(); ++p) {
        std::vector<uint8_t> got(bytes[p]);
        PIPELLM_CUDA_CHECK(cudaMemcpy(got.data(), out[p].get(), bytes[p], cudaMemcpyDeviceToHost));
        ASSERT_EQ(0, std::memcmp(got.data(), im.data(p), bytes[p])) << "replay " << replay << " position " << p;
      }
    }
  }
}

TEST(WeightStreamer, RejectsBadOptionsAndOrder) {
  PIPELLM_REQUIRE_GPU();
  Images im(sizes(3));
  std::vector<LayerImage> schedule = {im.image(0), im.image(1), im.image(2)};
  StreamerOptions o;
  o.slots = 2;
  o.depth = 3;
  EXPECT_THROW(LayerStreamer(schedule, o), InvalidArgument);
  o.depth = 0;
  o.slots = 0;
  EXPECT_THROW(LayerStreamer(schedule, o), InvalidArgument);
  o.slots = 2;
  o.depth = 1;
  LayerStreamer st(schedule, o);
  cuda::Stream s;
  st.begin_pass(s.get());
  EXPECT_THROW(st.before(1, s.get()), InvalidArgument);  // its copy is not enqueued yet
  EXPECT_THROW(st.before(7, s.get()), InvalidArgument);
  st.end_pass(s.get());
  s.synchronize();
}

}  // namespace
}  // namespace pipellm
