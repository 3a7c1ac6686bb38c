using System.Diagnostics;
using Microsoft.Extensions.Logging;
using ProxyPlanes.Model;
using ProxyPlanes.Sources.Kubernetes;
using ProxyPlanes.TestKit;

namespace ProxyPlanes.Core.Tests.Kubernetes;

/// <summary>Objects as the API server holds them.</summary>
internal static class Objects
{
    public static Service Service(string name, int port = 80, string ns = "default", Dictionary<string, string>? labels = null) => new()
    {
        Metadata = new ObjectMeta { Name = name, Namespace = ns, Uid = Guid.NewGuid().ToString(), Labels = labels },
        Spec = new ServiceSpec
        {
            Type = "ClusterIP",
            ClusterIP = "10.96.0.10",
            ClusterIPs = ["10.96.0.10"],
            Ports = [new ServicePort { Name = "http", Protocol = "TCP", Port = port, TargetPort = IntOrString.FromInt(8080) }],
        },
    };

    public static EndpointSlice Slice(string name, string service, params string[] addresses) => new()
    {
        Metadata = new ObjectMeta
        {
            Name = name,
            Namespace = "default",
            Labels = new() { ["kubernetes.io/service-name"] = service, ["endpointslice.kubernetes.io/managed-by"] = "endpointslice-controller.k8s.io" },
        },
        AddressType = "IPv4",
        Ports = [new EndpointPort { Name = "http", Protocol = "TCP", Port = 8080 }],
        Endpoints = [.. addresses.Select(a => new Endpoint { Addresses = [a], Conditions = new EndpointConditions { Ready = true }, NodeName = "node-a" })],
    };

    public static Node Node(string name, string podCidr = "10.244.1.0/24") => new()
    {
        Metadata = new ObjectMeta { Name = name },
        Spec = new NodeSpec { PodCIDR = podCidr, PodCIDRs = [podCidr] },
        Status = new NodeStatus { Addresses = [new NodeAddress { Type = "InternalIP", Address = "192.168.1.10" }] },
    };
}

internal enum ChangeType
{
    Add,
    Update,
    Delete,
}

internal sealed record SinkCall(string Kind, IKubernetesObject? Previous, IKubernetesObject? Current)
{
    public ChangeType Type => Previous is null ? ChangeType.Add : Current is null ? ChangeType.Delete : ChangeType.Update;

    public string Name => ((Current ?? Previous)!.Metadata?.Namespace is { Length: > 0 } ns ? ns + "/" : "") + (Current ?? Previous)!.Metadata?.Name;

    public override string ToString() => $"{Type} {Kind} {Name}";
}

/// <summary>Records sink calls; checks they never overlap.</summary>
internal sealed class RecordingSink : IObjectSink
{
    private readonly Lock _lock = new();
    private readonly List<SinkCall> _calls = [];
    private readonly SemaphoreSlim _changed = new(0);
    private int _inside;

    public int InitialStateDeliveredCount { get; private set; }

    /// <summary>How many calls came before <see cref="IObjectSink.OnInitialStateDelivered"/> (-1 before it).</summary>
    public int CallsBeforeInitial { get; private set; } = -1;

    public int Overlaps { get; private set; }

    public Func<SinkCall, Exception?>? ThrowOn { get; set; }

    public IReadOnlyList<SinkCall> Calls
    {
        get
        {
            lock (_lock) return [.. _calls];
        }
    }

    public void OnService(Service? previous, Service? current) => Record(new SinkCall("Service", previous, current));

    public void OnEndpointSlice(EndpointSlice? previous, EndpointSlice? current) => Record(new SinkCall("EndpointSlice", previous, current));

    public void OnNode(Node? previous, Node? current) => Record(new SinkCall("Node", previous, current));

    public void OnInitialStateDelivered()
    {
        Enter();
        lock (_lock)
        {
            InitialStateDeliveredCount++;
            if (CallsBeforeInitial < 0) CallsBeforeInitial = _calls.Count;
        }

        Leave();
    }

    /// <summary>Waits (bounded) until <paramref name="condition"/> holds over the calls so far.</summary>
    public async Task WaitForAsync(Func<RecordingSink, bool> condition, string what, TimeSpan? timeout = null)
    {
        var deadline = Stopwatch.GetTimestamp() + (long)((timeout ?? TimeSpan.FromSeconds(10)).TotalSeconds * Stopwatch.Frequency);
        while (!condition(this))
        {
            var left = TimeSpan.FromSeconds((double)(deadline - Stopwatch.GetTimestamp()) / Stopwatch.Frequency);
            if (left <= TimeSpan.Zero)
                throw new TimeoutException($"timed out waiting for {what}; calls: {string.Join(", ", Calls)}; initial: {InitialStateDeliveredCount}");
            await _changed.WaitAsync(left < TimeSpan.FromMilliseconds(50) ? left : TimeSpan.FromMilliseconds(50));
        }
    }

    public Task WaitForInitialAsync() => WaitForAsync(s => s.InitialStateDeliveredCount > 0, "the initial state");

    public Task<SinkCall> WaitForCallAsync(Func<SinkCall, bool> match, string what) => WaitForCallsAsync(match, 1, what).ContinueWith(t => t.Result[0], TaskScheduler.Default);

    public async Task<IReadOnlyList<SinkCall>> WaitForCallsAsync(Func<SinkCall, bool> match, int count, string what)
    {
        await WaitForAsync(s => s.Calls.Count(match) >= count, what);
        return [.. Calls.Where(match)];
    }

    private void Record(SinkCall call)
    {
        Enter();
        try
        {
            if (ThrowOn?.Invoke(call) is { } e) throw e;
            lock (_lock) _calls.Add(call);
        }
        finally
        {
            Leave();
        }
    }

    private void Enter()
    {
        if (Interlocked.Increment(ref _inside) > 1)
            lock (_lock) Overlaps++;
        Thread.Sleep(0);
    }

    private void Leave()
    {
        Interlocked.Decrement(ref _inside);
        _changed.Release();
    }
}

/// <summary>A source running against a fake server, with fast test timings; stops and cleans up on dispose.</summary>
internal sealed class RunningSource : IAsyncDisposable
{
    public static readonly KubernetesSourceOptions FastOptions = new()
    {
        InitialBackoff = TimeSpan.FromMilliseconds(20),
        MaxBackoff = TimeSpan.FromMilliseconds(200),
        MinWatchTimeout = TimeSpan.FromSeconds(30),
        HealthyWatch = TimeSpan.FromSeconds(30),
        ShortWatch = TimeSpan.FromMilliseconds(50),
        Random = new Random(7),
    };

    private readonly CancellationTokenSource _stop = new();

    private RunningSource(KubernetesApiClient client, KubernetesSource source, RecordingSink sink, ListLogger logger)
    {
        Client = client;
        Source = source;
        Sink = sink;
        Logger = logger;
        Task = source.RunAsync(sink, _stop.Token);
    }

    public KubernetesApiClient Client { get; }
    public KubernetesSource Source { get; }
    public RecordingSink Sink { get; }
    public ListLogger Logger { get; }
    public Task Task { get; }

    public static RunningSource Start(
        FakeApiServer server, KubernetesSourceOptions? options = null, KubernetesClientConfig? config = null,
        KubernetesApiClientOptions? clientOptions = null, string nodeName = "node-a", RecordingSink? sink = null)
    {
        var logger = new ListLogger();
        var client = new KubernetesApiClient(config ?? new KubernetesClientConfig { Server = server.BaseUri, Origin = "test" }, clientOptions, logger);
        var source = new KubernetesSource(client, nodeName, logger, options ?? FastOptions);
        return new RunningSource(client, source, sink ?? new RecordingSink(), logger);
    }

    public async Task<RunningSource> InitialAsync()
    {
        await Sink.WaitForInitialAsync();
        return this;
    }

    public async ValueTask DisposeAsync()
    {
        await _stop.CancelAsync();
        try
        {
            await Task.WaitAsync(TimeSpan.FromSeconds(10));
        }
        catch (Exception) when (Task.IsFaulted)
        {
            // a test that expects a failure looks at Task itself
        }
        finally
        {
            Client.Dispose();
            _stop.Dispose();
        }
    }
}

/// <summary>A temporary folder, removed on dispose.</summary>
internal sealed class ScratchDirectory : IDisposable
{
    public ScratchDirectory()
    {
        Path = System.IO.Path.Combine(System.IO.Path.GetTempPath(), "proxyplanes-kube-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(Path);
    }

    public string Path { get; }

    public string Write(string name, string content)
    {
        var file = System.IO.Path.Combine(Path, name);
        File.WriteAllText(file, content);
        return file;
    }

    public void Dispose()
    {
        try
        {
            Directory.Delete(Path, recursive: true);
        }
        catch (IOException)
        {
        }
    }
}

/// <summary>A clock moved by hand (only the wall clock: what the token refresh reads).</summary>
internal sealed class SteppedClock(DateTimeOffset start) : TimeProvider
{
    private DateTimeOffset _now = start;

    public override DateTimeOffset GetUtcNow() => _now;

    public void Advance(TimeSpan by) => _now += by;
}
