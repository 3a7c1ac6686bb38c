namespace ProxyPlanes.Backends.Ebpf.Tests;

/// <summary>
/// What a test made, undone in reverse order when the test ends (cgroups, namespaces, bpffs mounts, pins, servers):
/// each step runs even when an earlier one fails, and a failure is printed, never thrown from Dispose.
/// </summary>
internal sealed class CleanupStack : IDisposable
{
    private readonly List<IDisposable> _items = [];

    public void Add(IDisposable item) => _items.Add(item);

    public T Track<T>(T resource)
        where T : IDisposable
    {
        _items.Add(resource);
        return resource;
    }

    public void Dispose()
    {
        for (var i = _items.Count - 1; i >= 0; i--)
        {
            try
            {
                _items[i].Dispose();
            }
            catch (Exception e)
            {
                Console.Error.WriteLine($"cleanup: {e.Message}");
            }
        }
        _items.Clear();
    }
}
