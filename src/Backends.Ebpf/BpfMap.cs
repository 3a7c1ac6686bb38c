using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

namespace ProxyPlanes.Backends.Ebpf;

/// <summary>How <see cref="BpfMap.Update(ReadOnlySpan{byte}, ReadOnlySpan{byte}, BpfUpdateFlags)"/> treats an existing key.</summary>
public enum BpfUpdateFlags : ulong
{
    /// <summary>BPF_ANY: create or replace.</summary>
    Any = 0,

    /// <summary>BPF_NOEXIST: create only (EEXIST otherwise).</summary>
    NoExist = 1,

    /// <summary>BPF_EXIST: replace only (ENOENT otherwise).</summary>
    Exist = 2,
}

/// <summary>
/// A BPF map by its own fd, read and written with raw bpf(2) (one syscall per element, ~2 µs here).
/// Keys and values are byte spans of exactly the map's sizes, or unmanaged structs that mirror
/// bpf/proxyplanes.h (<see cref="MapLayout"/>).
/// </summary>
public sealed unsafe class BpfMap : IDisposable
{
    private readonly SafeBpfHandle _handle;

    private BpfMap(SafeBpfHandle handle, string name, uint type, int keySize, int valueSize, int maxEntries)
    {
        _handle = handle;
        Name = name;
        Type = type;
        KeySize = keySize;
        ValueSize = valueSize;
        MaxEntries = maxEntries;
    }

    /// <summary>The kernel's name of the map (15 characters at most), e.g. <c>pp_services_v2</c>.</summary>
    public string Name { get; }

    /// <summary>enum bpf_map_type (1 is a hash, 9 an LRU hash).</summary>
    public uint Type { get; }

    public int KeySize { get; }

    public int ValueSize { get; }

    public int MaxEntries { get; }

    /// <summary>Opens a map pinned at <paramref name="path"/> on a bpf filesystem (BPF_OBJ_GET).</summary>
    public static BpfMap OpenPinned(string path) => FromHandle(BpfFs.Get(path));

    /// <summary>Reads the map's name and sizes from the kernel (BPF_OBJ_GET_INFO_BY_FD); takes ownership of <paramref name="handle"/>.</summary>
    internal static BpfMap FromHandle(SafeBpfHandle handle)
    {
        try
        {
            var info = default(BpfMapInfo);
            using (var fd = handle.Borrow())
            {
                var attributes = new BpfInfoAttributes { BpfFd = fd.Fd, InfoLength = (uint)sizeof(BpfMapInfo), Info = (ulong)&info };
                Interop.CheckedBpf(BpfCommand.BPF_OBJ_GET_INFO_BY_FD, ref attributes, $"map fd {fd.Fd}");
            }
            var name = Marshal.PtrToStringUTF8((nint)info.Name) ?? "";
            return new BpfMap(handle, name, info.Type, (int)info.KeySize, (int)info.ValueSize, (int)info.MaxEntries);
        }
        catch
        {
            handle.Dispose();
            throw;
        }
    }

    /// <summary>Creates or replaces an element (BPF_MAP_UPDATE_ELEM).</summary>
    public void Update(ReadOnlySpan<byte> key, ReadOnlySpan<byte> value, BpfUpdateFlags flags = BpfUpdateFlags.Any)
    {
        CheckSize(key, KeySize, "key");
        CheckSize(value, ValueSize, "value");
        fixed (byte* keyPointer = key)
        fixed (byte* valuePointer = value)
        {
            using var fd = _handle.Borrow();
            var attributes = new BpfMapElementAttributes { MapFd = fd.Fd, Key = (ulong)keyPointer, ValueOrNextKey = (ulong)valuePointer, Flags = (ulong)flags };
            Interop.CheckedBpf(BpfCommand.BPF_MAP_UPDATE_ELEM, ref attributes, $"map {Name}");
        }
    }

    /// <summary>
    /// False once the kernel refused BPF_MAP_UPDATE_BATCH on this map (before 5.6: EINVAL; a map type without it:
    /// ENOTSUPP) while a single update of the same element succeeded: <see cref="UpdateBatch{TKey, TValue}"/> then
    /// writes one element at a time. Tests set it to force that path.
    /// </summary>
    internal bool BatchUpdates { get; set; } = true;

    /// <summary>
    /// Creates or replaces <paramref name="keys"/>[i] → <paramref name="values"/>[i] in order, in one BPF_MAP_UPDATE_BATCH
    /// (one syscall for the lot; the kernel applies them one by one and stops at the first it refuses), or one
    /// BPF_MAP_UPDATE_ELEM each where the kernel has no batch. Returns how many were written; <paramref name="refused"/>
    /// is the error of the element after them (null when all were).
    /// </summary>
    public int UpdateBatch<TKey, TValue>(ReadOnlySpan<TKey> keys, ReadOnlySpan<TValue> values, out BpfException? refused)
        where TKey : unmanaged
        where TValue : unmanaged
    {
        if (keys.Length != values.Length) throw new ArgumentException($"map {Name}: {keys.Length} keys but {values.Length} values");
        refused = null;
        if (keys.IsEmpty) return 0;
        CheckSize(Bytes(in keys[0]), KeySize, "key");
        CheckSize(Bytes(in values[0]), ValueSize, "value");
        var written = 0;
        if (BatchUpdates)
        {
            int result, errno;
            uint done;
            fixed (TKey* keyPointer = keys)
            fixed (TValue* valuePointer = values)
            {
                using var fd = _handle.Borrow();
                var attributes = new BpfMapBatchAttributes { MapFd = fd.Fd, Keys = (ulong)keyPointer, Values = (ulong)valuePointer, Count = (uint)keys.Length };
                result = Interop.Bpf(BpfCommand.BPF_MAP_UPDATE_BATCH, ref attributes);
                errno = result < 0 ? Marshal.GetLastPInvokeError() : 0;
                done = attributes.Count;
            }
            if (result >= 0) return keys.Length;
            written = (int)Math.Min(done, (uint)keys.Length);
            if (written > 0 || !NoBatch(errno))
            {
                refused = BpfException.FromErrno(errno, BpfCommand.BPF_MAP_UPDATE_BATCH, $"map {Name}");
                return written;
            }
        }
        for (; written < keys.Length; written++)
        {
            try
            {
                Update(in keys[written], in values[written]);
            }
            catch (BpfException e)
            {
                refused = e;
                return written;
            }
            // The element the batch was refused on went in alone (or batches were off already): no batch for this map.
            BatchUpdates = false;
        }
        return written;
    }

    /// <summary>EINVAL (a kernel before 5.6 does not know the command), ENOTSUPP (524) or EOPNOTSUPP: no batch here.</summary>
    private static bool NoBatch(int errno) => errno is 22 or 524 or 95;

    /// <summary>Reads an element into <paramref name="value"/> (BPF_MAP_LOOKUP_ELEM); false when the key is absent.</summary>
    public bool TryLookup(ReadOnlySpan<byte> key, Span<byte> value)
    {
        CheckSize(key, KeySize, "key");
        CheckSize(value, ValueSize, "value");
        fixed (byte* keyPointer = key)
        fixed (byte* valuePointer = value)
        {
            using var fd = _handle.Borrow();
            var attributes = new BpfMapElementAttributes { MapFd = fd.Fd, Key = (ulong)keyPointer, ValueOrNextKey = (ulong)valuePointer };
            return Succeeded(Interop.Bpf(BpfCommand.BPF_MAP_LOOKUP_ELEM, ref attributes), BpfCommand.BPF_MAP_LOOKUP_ELEM);
        }
    }

    /// <summary>Deletes an element (BPF_MAP_DELETE_ELEM); false when the key was absent.</summary>
    public bool Delete(ReadOnlySpan<byte> key)
    {
        CheckSize(key, KeySize, "key");
        fixed (byte* keyPointer = key)
        {
            using var fd = _handle.Borrow();
            var attributes = new BpfMapElementAttributes { MapFd = fd.Fd, Key = (ulong)keyPointer };
            return Succeeded(Interop.Bpf(BpfCommand.BPF_MAP_DELETE_ELEM, ref attributes), BpfCommand.BPF_MAP_DELETE_ELEM);
        }
    }

    /// <summary>
    /// The key after <paramref name="key"/> (BPF_MAP_GET_NEXT_KEY), or the first key when
    /// <paramref name="key"/> is empty; false after the last key.
    /// </summary>
    public bool TryGetNextKey(ReadOnlySpan<byte> key, Span<byte> nextKey)
    {
        if (!key.IsEmpty) CheckSize(key, KeySize, "key");
        CheckSize(nextKey, KeySize, "next key");
        fixed (byte* keyPointer = key)
        fixed (byte* nextPointer = nextKey)
        {
            using var fd = _handle.Borrow();
            var attributes = new BpfMapElementAttributes { MapFd = fd.Fd, Key = key.IsEmpty ? 0 : (ulong)keyPointer, ValueOrNextKey = (ulong)nextPointer };
            return Succeeded(Interop.Bpf(BpfCommand.BPF_MAP_GET_NEXT_KEY, ref attributes), BpfCommand.BPF_MAP_GET_NEXT_KEY);
        }
    }

    public void Update<TKey, TValue>(in TKey key, in TValue value, BpfUpdateFlags flags = BpfUpdateFlags.Any)
        where TKey : unmanaged
        where TValue : unmanaged =>
        Update(Bytes(in key), Bytes(in value), flags);

    public bool TryLookup<TKey, TValue>(in TKey key, out TValue value)
        where TKey : unmanaged
        where TValue : unmanaged
    {
        value = default;
        return TryLookup(Bytes(in key), MemoryMarshal.AsBytes(MemoryMarshal.CreateSpan(ref value, 1)));
    }

    public bool Delete<TKey>(in TKey key)
        where TKey : unmanaged =>
        Delete(Bytes(in key));

    /// <summary>Every key, in the kernel's order. A map changed meanwhile may skip or repeat keys, as with any GET_NEXT_KEY walk.</summary>
    public List<TKey> Keys<TKey>()
        where TKey : unmanaged
    {
        var keys = new List<TKey>();
        var current = default(TKey);
        var next = default(TKey);
        var first = true;
        while (TryGetNextKey(first ? [] : Bytes(in current), MemoryMarshal.AsBytes(MemoryMarshal.CreateSpan(ref next, 1))))
        {
            keys.Add(next);
            current = next;
            first = false;
        }
        return keys;
    }

    /// <summary>The map holds no element: one BPF_MAP_GET_NEXT_KEY without a key (the first key, or ENOENT).</summary>
    public bool IsEmpty()
    {
        Span<byte> first = stackalloc byte[KeySize];
        return !TryGetNextKey([], first);
    }

    /// <summary>Pins the map at <paramref name="path"/> on a bpf filesystem (BPF_OBJ_PIN), so it outlives this process.</summary>
    public void Pin(string path) => BpfFs.Pin(_handle, path, $"map {Name}");

    /// <summary>The map's fd, for handing it to another object's load (<c>bpf_map__reuse_fd</c>).</summary>
    internal SafeBpfHandle Handle => _handle;

    public void Dispose() => _handle.Dispose();

    private static ReadOnlySpan<byte> Bytes<T>(in T value)
        where T : unmanaged =>
        MemoryMarshal.AsBytes(new ReadOnlySpan<T>(in value));

    private void CheckSize(ReadOnlySpan<byte> buffer, int expected, string what)
    {
        if (buffer.Length != expected)
            throw new ArgumentException($"map {Name}: {what} of {buffer.Length} bytes, the map's is {expected} (does the C# mirror match bpf/proxyplanes.h?)");
    }

    /// <summary>True on success, false on ENOENT (absent key, or no next key), throws on anything else.</summary>
    private bool Succeeded(int result, BpfCommand command, [CallerMemberName] string caller = "")
    {
        if (result >= 0) return true;
        var errno = Marshal.GetLastPInvokeError();
        if (errno == 2) return false;
        throw BpfException.FromErrno(errno, command, $"map {Name} ({caller})");
    }
}

/// <summary>Pins on a bpf filesystem (BPF_OBJ_PIN / BPF_OBJ_GET).</summary>
internal static unsafe class BpfFs
{
    internal static void Pin(SafeBpfHandle handle, string path, string what)
    {
        var pathBytes = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* pathPointer = pathBytes)
        {
            using var fd = handle.Borrow();
            var attributes = new BpfObjectAttributes { PathName = (ulong)pathPointer, BpfFd = fd.Fd };
            Interop.CheckedBpf(BpfCommand.BPF_OBJ_PIN, ref attributes, $"{what} at {path}");
        }
    }

    internal static SafeBpfHandle Get(string path)
    {
        var pathBytes = System.Text.Encoding.UTF8.GetBytes(path + "\0");
        fixed (byte* pathPointer = pathBytes)
        {
            var attributes = new BpfObjectAttributes { PathName = (ulong)pathPointer };
            return new SafeBpfHandle(Interop.CheckedBpf(BpfCommand.BPF_OBJ_GET, ref attributes, path));
        }
    }
}
