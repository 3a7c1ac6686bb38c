using System.Buffers;
using System.Text;
using System.Text.Json;
using ProxyPlanes.Model;
using ProxyPlanes.Sources.Kubernetes;

namespace ProxyPlanes.Core.Tests.Kubernetes;

public class WatchStreamParserTests
{
    [Fact]
    public void ParseLines_EventsSplitAcrossSegments_ParsesCompleteLinesAndKeepsTheRest()
    {
        const string Stream =
            "{\"type\":\"ADDED\",\"object\":{\"kind\":\"Service\",\"apiVersion\":\"v1\",\"metadata\":{\"name\":\"web\",\"namespace\":\"default\",\"resourceVersion\":\"5\"}}}\n" +
            "\r\n" +
            "{\"object\":{\"metadata\":{\"name\":\"web\",\"namespace\":\"default\",\"resourceVersion\":\"6\"}},\"type\":\"DELETED\"}\n" +
            "{\"type\":\"BOOKMARK\",\"object\":{\"kind\":\"Service\",\"metadata\":{\"resourceVersion\":\"9\"}}}\n" +
            "{\"type\":\"MODIFIED\",\"obj";
        var events = new List<WatchEvent<Service>>();

        var buffer = Segmented(Encoding.UTF8.GetBytes(Stream), 7);
        var end = WatchStreamParser.ParseLines(buffer, KubernetesResources.Services, events);

        Assert.Equal([WatchEventType.Added, WatchEventType.Deleted, WatchEventType.Bookmark], events.Select(e => e.Type));
        Assert.Equal(["5", "6", "9"], events.Select(e => e.Object!.Metadata!.ResourceVersion));
        Assert.Equal("Service", events[1].Object!.Kind); // filled in when the object comes without it
        Assert.Equal("{\"type\":\"MODIFIED\",\"obj", Encoding.UTF8.GetString(buffer.Slice(end).ToArray()));
    }

    [Fact]
    public void Parse_ErrorEvent_ReadsTheStatus()
    {
        var line = "{\"type\":\"ERROR\",\"object\":{\"kind\":\"Status\",\"apiVersion\":\"v1\",\"metadata\":{},\"status\":\"Failure\",\"message\":\"too old resource version: 1 (5)\",\"reason\":\"Expired\",\"code\":410}}"u8.ToArray();

        var e = WatchStreamParser.Parse(new ReadOnlySequence<byte>(line), KubernetesResources.EndpointSlices);

        Assert.Equal(WatchEventType.Error, e.Type);
        Assert.Null(e.Object);
        Assert.Equal((410, "Expired"), (e.Status!.Code, e.Status.Reason));
    }

    [Theory]
    [InlineData("{\"type\":\"RESYNC\",\"object\":{}}", "unknown event type 'RESYNC'")]
    [InlineData("{\"type\":\"ADDED\"}", "has no object")]
    [InlineData("[1,2]", "not a JSON object")]
    public void Parse_MalformedEvent_ThrowsJsonException(string line, string message)
    {
        var error = Assert.Throws<JsonException>(() => WatchStreamParser.Parse(new ReadOnlySequence<byte>(Encoding.UTF8.GetBytes(line)), KubernetesResources.Nodes));

        Assert.Contains(message, error.Message);
        Assert.Contains("nodes", error.Message);
    }

    private static ReadOnlySequence<byte> Segmented(byte[] bytes, int size)
    {
        Segment? first = null, last = null;
        for (var i = 0; i < bytes.Length; i += size)
        {
            var segment = new Segment(bytes.AsMemory(i, Math.Min(size, bytes.Length - i)), last);
            first ??= segment;
            last = segment;
        }

        return new ReadOnlySequence<byte>(first!, 0, last!, last!.Memory.Length);
    }

    private sealed class Segment : ReadOnlySequenceSegment<byte>
    {
        public Segment(ReadOnlyMemory<byte> memory, Segment? previous)
        {
            Memory = memory;
            if (previous is null) return;
            RunningIndex = previous.RunningIndex + previous.Memory.Length;
            previous.Next = this;
        }
    }
}

public class ExponentialBackoffTests
{
    [Fact]
    public void Next_RepeatedFailures_DoublesWithJitterUpToTheMaximumAndResets()
    {
        var backoff = new ExponentialBackoff(TimeSpan.FromMilliseconds(500), TimeSpan.FromSeconds(30), new Random(3));

        var waits = Enumerable.Range(0, 10).Select(_ => backoff.Next().TotalMilliseconds).ToList();
        backoff.Reset();
        var afterReset = backoff.Next().TotalMilliseconds;

        double[] nominal = [500, 1000, 2000, 4000, 8000, 16000, 30000, 30000, 30000, 30000];
        for (var i = 0; i < nominal.Length; i++)
            Assert.InRange(waits[i], nominal[i] * 0.8, nominal[i] * 1.2);
        Assert.InRange(afterReset, 400, 600);
        Assert.True(waits.Skip(6).Distinct().Count() > 1, "waits at the maximum are jittered");
    }
}
