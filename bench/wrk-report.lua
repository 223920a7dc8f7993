-- wrk reporter for bench/run.sh: one JSON line with what the tables need.
-- Latencies are in microseconds; errors sums every kind wrk counts,
-- including non-2xx answers.
done = function(summary, latency, requests)
   local e = summary.errors
   local errors = e.connect + e.read + e.write + e.timeout + e.status
   io.write(string.format(
      '{"requests": %d, "duration_us": %d, "rps": %.1f, "p50_us": %d, "p99_us": %d, ' ..
      '"max_us": %d, "errors": %d, "non2xx": %d}\n',
      summary.requests, summary.duration,
      summary.requests / (summary.duration / 1e6),
      latency:percentile(50), latency:percentile(99), latency.max,
      errors, e.status))
end
