namespace ProxyPlanes.Sources.Kubernetes;

/// <summary>
/// Waits between retries: <c>initial</c>, doubling with each further failure up to <c>max</c>, each wait
/// spread ±20 % so that many proxies reconnecting at once do not stay in step. <see cref="Reset"/> after
/// a success starts over.
/// </summary>
internal sealed class ExponentialBackoff(TimeSpan initial, TimeSpan max, Random random)
{
    public const double Jitter = 0.2;

    private int _failures;

    public TimeSpan Next()
    {
        var nominal = Math.Min(initial.TotalMilliseconds * Math.Pow(2, Math.Min(_failures, 30)), max.TotalMilliseconds);
        _failures++;
        double spread;
        lock (random) spread = random.NextDouble();
        return TimeSpan.FromMilliseconds(nominal * (1 - Jitter + 2 * Jitter * spread));
    }

    public void Reset() => _failures = 0;
}
