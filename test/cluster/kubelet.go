package cluster

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// DefaultNodeName is the name of the one Node of the local cluster.
const DefaultNodeName = "kubervisor-node"

// KubeletOptions configures a Kubelet.
type KubeletOptions struct {
	// NodeName is the Node pods are bound to; default DefaultNodeName. EnsureNode creates it.
	NodeName string
	// NodeIP is the Node's InternalIP and every pod's hostIP; default 10.240.0.1.
	NodeIP string
	// Namespace restricts the Kubelet to one namespace; empty means all namespaces.
	Namespace string
	// Selector restricts the Kubelet to the pods it matches; empty means every pod.
	Selector string
	// PodCIDR is where pod IPs come from (IPv4); default 10.244.0.0/16. Two Kubelets on one cluster
	// need disjoint ranges.
	PodCIDR string
	// TerminationDelay is how long a deleted pod stays Terminating before the Kubelet removes it,
	// as a real kubelet does after the containers stopped; default 0 (at once).
	TerminationDelay time.Duration
	// Workers is the number of pods handled in parallel; default 4.
	Workers int
}

// Kubelet plays the scheduler and the kubelet for pods on a cluster that has neither: it binds pods
// without a node to its Node through the pods/binding subresource, writes their status (phase
// Running, a unique podIP, PodReady and ContainersReady, running container statuses) through the
// status subresource, and finishes the deletion of pods that are Terminating. Nothing runs: pod IPs
// are only object fields.
//
// Readiness is Ready by default and can be overridden per pod with SetReady, so a test can make a pod
// NotReady. Only one Kubelet should handle a given pod.
type Kubelet struct {
	cs   kubernetes.Interface
	opts KubeletOptions

	factory informers.SharedInformerFactory
	lister  corelisters.PodLister
	queue   workqueue.TypedRateLimitingInterface[string]

	ipBase, ipSize uint32

	mu        sync.Mutex
	readiness map[string]bool // namespace/name -> forced readiness
	ips       map[types.UID]string
	usedIPs   map[string]types.UID
	nextIP    uint32
	cancel    context.CancelFunc
	stopped   chan struct{}
	lastError error
}

// NewKubelet returns a Kubelet for cs; Start runs it.
func NewKubelet(cs kubernetes.Interface, opts KubeletOptions) (*Kubelet, error) {
	if opts.NodeName == "" {
		opts.NodeName = DefaultNodeName
	}
	if opts.NodeIP == "" {
		opts.NodeIP = "10.240.0.1"
	}
	if opts.PodCIDR == "" {
		opts.PodCIDR = "10.244.0.0/16"
	}
	if opts.Workers <= 0 {
		opts.Workers = 4
	}
	if _, err := labels.Parse(opts.Selector); err != nil {
		return nil, fmt.Errorf("parsing kubelet pod selector %q: %w", opts.Selector, err)
	}
	_, cidr, err := net.ParseCIDR(opts.PodCIDR)
	if err != nil || cidr.IP.To4() == nil {
		return nil, fmt.Errorf("pod CIDR %q is not an IPv4 CIDR", opts.PodCIDR)
	}
	ones, bits := cidr.Mask.Size()
	return &Kubelet{
		cs:        cs,
		opts:      opts,
		ipBase:    binary.BigEndian.Uint32(cidr.IP.To4()),
		ipSize:    uint32(1) << (bits - ones),
		nextIP:    2, // .0 is the network, .1 is left for a gateway
		readiness: map[string]bool{},
		ips:       map[types.UID]string{},
		usedIPs:   map[string]types.UID{},
	}, nil
}

// NodeName is the Node this Kubelet binds pods to.
func (k *Kubelet) NodeName() string { return k.opts.NodeName }

// Start creates the Node if needed, starts watching pods and returns once the watch is synced. The
// Kubelet runs until ctx is done or Stop is called.
func (k *Kubelet) Start(ctx context.Context) error {
	if err := EnsureNode(ctx, k.cs, k.opts.NodeName, k.opts.NodeIP); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(ctx)
	k.cancel = cancel
	k.stopped = make(chan struct{})
	k.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
		workqueue.NewTypedItemExponentialFailureRateLimiter[string](50*time.Millisecond, 5*time.Second),
		workqueue.TypedRateLimitingQueueConfig[string]{Name: "fake-kubelet"})
	k.factory = informers.NewSharedInformerFactoryWithOptions(k.cs, 0,
		informers.WithNamespace(k.opts.Namespace),
		informers.WithTweakListOptions(func(o *metav1.ListOptions) { o.LabelSelector = k.opts.Selector }))
	podInformer := k.factory.Core().V1().Pods()
	k.lister = podInformer.Lister()
	enqueue := func(obj any) {
		if key, err := cache.DeletionHandlingMetaNamespaceKeyFunc(obj); err == nil {
			k.queue.Add(key)
		}
	}
	if _, err := podInformer.Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    enqueue,
		UpdateFunc: func(_, obj any) { enqueue(obj) },
		DeleteFunc: enqueue,
	}); err != nil {
		cancel()
		return fmt.Errorf("watching pods: %w", err)
	}
	k.factory.Start(ctx.Done())
	for typ, ok := range k.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			cancel()
			k.queue.ShutDown()
			k.factory.Shutdown()
			return fmt.Errorf("syncing the fake kubelet's cache of %v", typ)
		}
	}
	var wg sync.WaitGroup
	for range k.opts.Workers {
		wg.Go(func() {
			for k.processNext(ctx) {
			}
		})
	}
	go func() {
		<-ctx.Done()
		k.queue.ShutDown()
		wg.Wait()
		k.factory.Shutdown()
		close(k.stopped)
	}()
	return nil
}

// Stop stops the Kubelet and waits for its workers. Pods keep the status they have.
func (k *Kubelet) Stop() {
	if k.cancel == nil {
		return
	}
	k.cancel()
	<-k.stopped
}

// SetReady forces the readiness of pod namespace/name (its PodReady and ContainersReady conditions
// and container readiness); the override is dropped when the pod is deleted.
func (k *Kubelet) SetReady(namespace, name string, ready bool) {
	key := namespace + "/" + name
	k.mu.Lock()
	k.readiness[key] = ready
	k.mu.Unlock()
	if k.queue != nil {
		k.queue.Add(key)
	}
}

// ResetReady drops the readiness override of pod namespace/name: it becomes Ready again.
func (k *Kubelet) ResetReady(namespace, name string) {
	key := namespace + "/" + name
	k.mu.Lock()
	delete(k.readiness, key)
	k.mu.Unlock()
	if k.queue != nil {
		k.queue.Add(key)
	}
}

// LastError is the last error the Kubelet met while handling a pod (it retries on its own); it helps
// explain a test that waits in vain.
func (k *Kubelet) LastError() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.lastError
}

func (k *Kubelet) processNext(ctx context.Context) bool {
	key, shutdown := k.queue.Get()
	if shutdown {
		return false
	}
	defer k.queue.Done(key)
	requeueAfter, err := k.sync(ctx, key)
	switch {
	case err != nil && ctx.Err() == nil:
		k.mu.Lock()
		k.lastError = fmt.Errorf("pod %s: %w", key, err)
		k.mu.Unlock()
		k.queue.AddRateLimited(key)
	case requeueAfter > 0:
		k.queue.Forget(key)
		k.queue.AddAfter(key, requeueAfter)
	default:
		k.queue.Forget(key)
	}
	return true
}

// sync brings one pod one step closer to what a scheduler and kubelet would make of it.
func (k *Kubelet) sync(ctx context.Context, key string) (time.Duration, error) {
	namespace, name, err := cache.SplitMetaNamespaceKey(key)
	if err != nil {
		return 0, nil
	}
	pod, err := k.lister.Pods(namespace).Get(name)
	if apierrors.IsNotFound(err) {
		k.forget(key)
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if pod.Spec.NodeName != "" && pod.Spec.NodeName != k.opts.NodeName {
		return 0, nil // another node's pod
	}

	// 1. Terminating: the containers "stopped" at once; remove the pod as a kubelet does.
	if pod.DeletionTimestamp != nil {
		if wait := time.Until(pod.DeletionTimestamp.Add(k.opts.TerminationDelay - deletionGrace(pod))); pod.Spec.NodeName != "" && wait > 0 {
			return wait, nil
		}
		err := k.cs.CoreV1().Pods(namespace).Delete(ctx, name, metav1.DeleteOptions{
			GracePeriodSeconds: new(int64),
			Preconditions:      &metav1.Preconditions{UID: &pod.UID},
		})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return 0, fmt.Errorf("deleting terminating pod: %w", err)
		}
		return 0, nil
	}

	// 2. Unscheduled: bind it, as the scheduler would. The update event brings it back here.
	if pod.Spec.NodeName == "" {
		err := k.cs.CoreV1().Pods(namespace).Bind(ctx, &corev1.Binding{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: namespace, UID: pod.UID},
			Target:     corev1.ObjectReference{Kind: "Node", Name: k.opts.NodeName},
		}, metav1.CreateOptions{})
		if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) {
			return 0, fmt.Errorf("binding to node %s: %w", k.opts.NodeName, err)
		}
		return 0, nil
	}

	// 3. Bound: running, with the readiness the test asked for.
	if pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
		return 0, nil
	}
	ip, err := k.podIP(pod)
	if err != nil {
		return 0, err
	}
	k.mu.Lock()
	ready, forced := k.readiness[key]
	k.mu.Unlock()
	if !forced {
		ready = true
	}
	status := RunningPodStatus(pod, k.opts.NodeIP, ip, ready, metav1.Now())
	if equality.Semantic.DeepEqual(status, &pod.Status) {
		return 0, nil
	}
	updated := pod.DeepCopy()
	updated.Status = *status
	if _, err := k.cs.CoreV1().Pods(namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{}); err != nil {
		if apierrors.IsConflict(err) || apierrors.IsNotFound(err) {
			return 0, nil // a newer version is on its way through the watch
		}
		return 0, fmt.Errorf("updating status: %w", err)
	}
	return 0, nil
}

// deletionGrace is the grace period the API server already added to the pod's deletionTimestamp.
func deletionGrace(pod *corev1.Pod) time.Duration {
	if pod.DeletionGracePeriodSeconds == nil {
		return 0
	}
	return time.Duration(*pod.DeletionGracePeriodSeconds) * time.Second
}

func (k *Kubelet) forget(key string) {
	k.mu.Lock()
	defer k.mu.Unlock()
	delete(k.readiness, key)
	// IPs of deleted pods are not reused: a fresh IP per pod keeps EndpointSlice changes unambiguous.
}

// podIP returns the pod's IP, keeping the one it has, else allocating the next free one.
func (k *Kubelet) podIP(pod *corev1.Pod) (string, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if pod.Status.PodIP != "" {
		k.ips[pod.UID] = pod.Status.PodIP
		k.usedIPs[pod.Status.PodIP] = pod.UID
		return pod.Status.PodIP, nil
	}
	if ip, ok := k.ips[pod.UID]; ok {
		return ip, nil
	}
	// IPs already on pods this Kubelet has not handled yet (e.g. after a restart) must not be reused.
	if len(k.ips) == 0 {
		if pods, err := k.lister.List(labels.Everything()); err == nil {
			for _, p := range pods {
				if p.Status.PodIP != "" {
					k.usedIPs[p.Status.PodIP] = p.UID
				}
			}
		}
	}
	for ; k.nextIP < k.ipSize-1; k.nextIP++ {
		var b [4]byte
		binary.BigEndian.PutUint32(b[:], k.ipBase+k.nextIP)
		ip := net.IP(b[:]).String()
		if _, used := k.usedIPs[ip]; used {
			continue
		}
		k.nextIP++
		k.ips[pod.UID] = ip
		k.usedIPs[ip] = pod.UID
		return ip, nil
	}
	return "", errors.New("pod CIDR " + k.opts.PodCIDR + " is exhausted")
}

// RunningPodStatus returns the status a kubelet would report for pod once all its containers run:
// phase Running, podIP ip, hostIP hostIP, ContainersReady set to ready, and PodReady set to ready and,
// as the kubelet does, every readiness gate of the pod's spec: a gate whose condition is missing or not
// True makes the pod NotReady. Fields that do
// not change (start time, transition times) are kept from the pod's current status, so calling it
// again on its own result returns an equal status.
func RunningPodStatus(pod *corev1.Pod, hostIP, ip string, ready bool, now metav1.Time) *corev1.PodStatus {
	// NOTE: observedGeneration (status and conditions) is left alone: it is dropped unless the
	// PodObservedGenerationTracking gate is on, and a field the API server drops would make every
	// comparison differ and the Kubelet write forever.
	s := pod.Status.DeepCopy()
	s.Phase = corev1.PodRunning
	s.HostIP = hostIP
	s.HostIPs = []corev1.HostIP{{IP: hostIP}}
	s.PodIP = ip
	s.PodIPs = []corev1.PodIP{{IP: ip}}
	if s.StartTime == nil {
		s.StartTime = &now
	}
	s.Reason, s.Message = "", ""
	readyStatus, podReady := corev1.ConditionFalse, corev1.ConditionFalse
	if ready {
		readyStatus, podReady = corev1.ConditionTrue, corev1.ConditionTrue
	}
	for _, g := range pod.Spec.ReadinessGates {
		gate := corev1.ConditionFalse
		for _, c := range s.Conditions {
			if c.Type == g.ConditionType {
				gate = c.Status
			}
		}
		if gate != corev1.ConditionTrue {
			podReady = corev1.ConditionFalse
		}
	}
	for _, c := range []struct {
		typ    corev1.PodConditionType
		status corev1.ConditionStatus
	}{
		{corev1.PodReadyToStartContainers, corev1.ConditionTrue},
		{corev1.PodInitialized, corev1.ConditionTrue},
		{corev1.PodScheduled, corev1.ConditionTrue},
		{corev1.ContainersReady, readyStatus},
		{corev1.PodReady, podReady},
	} {
		setPodCondition(s, c.typ, c.status, now)
	}

	oldStatus := map[string]corev1.ContainerStatus{}
	for _, cs := range s.ContainerStatuses {
		oldStatus[cs.Name] = cs
	}
	startedAt := *s.StartTime
	s.ContainerStatuses = make([]corev1.ContainerStatus, 0, len(pod.Spec.Containers))
	for _, c := range pod.Spec.Containers {
		cs := runningContainerStatus(pod, c, ready, startedAt)
		if old, ok := oldStatus[c.Name]; ok && old.State.Running != nil {
			cs.State.Running.StartedAt = old.State.Running.StartedAt
		}
		s.ContainerStatuses = append(s.ContainerStatuses, cs)
	}
	s.InitContainerStatuses = nil
	for _, c := range pod.Spec.InitContainers {
		if c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways {
			s.InitContainerStatuses = append(s.InitContainerStatuses, runningContainerStatus(pod, c, ready, startedAt))
			continue
		}
		cs := runningContainerStatus(pod, c, false, startedAt)
		cs.Started = new(bool)
		cs.State = corev1.ContainerState{Terminated: &corev1.ContainerStateTerminated{
			ExitCode: 0, Reason: "Completed", StartedAt: startedAt, FinishedAt: startedAt,
			ContainerID: cs.ContainerID,
		}}
		s.InitContainerStatuses = append(s.InitContainerStatuses, cs)
	}
	return s
}

func runningContainerStatus(pod *corev1.Pod, c corev1.Container, ready bool, startedAt metav1.Time) corev1.ContainerStatus {
	started := true
	return corev1.ContainerStatus{
		Name:        c.Name,
		Image:       c.Image,
		ImageID:     "fake://" + c.Image,
		ContainerID: "fake://" + string(pod.UID) + "/" + c.Name,
		Ready:       ready,
		Started:     &started,
		State:       corev1.ContainerState{Running: &corev1.ContainerStateRunning{StartedAt: startedAt}},
	}
}

func setPodCondition(s *corev1.PodStatus, typ corev1.PodConditionType, status corev1.ConditionStatus, now metav1.Time) {
	for i := range s.Conditions {
		c := &s.Conditions[i]
		if c.Type != typ {
			continue
		}
		if c.Status != status {
			c.Status = status
			c.LastTransitionTime = now
		}
		c.Reason, c.Message = "", ""
		return
	}
	s.Conditions = append(s.Conditions, corev1.PodCondition{
		Type: typ, Status: status, LastTransitionTime: now,
	})
}

// EnsureNode creates the Node name (if missing) with a Ready status and InternalIP ip. The
// EndpointSlice controller only lists pods whose spec.nodeName names an existing Node. Nothing
// renews its heartbeat: the node lifecycle controller must not run on this cluster.
func EnsureNode(ctx context.Context, cs kubernetes.Interface, name, ip string) error {
	node, err := cs.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		node, err = cs.CoreV1().Nodes().Create(ctx, &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
				corev1.LabelHostname: name,
				corev1.LabelOSStable: "linux",
				"kubernetes.io/arch": "amd64",
			}},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		return fmt.Errorf("creating node %s: %w", name, err)
	}
	for _, c := range node.Status.Conditions {
		if c.Type == corev1.NodeReady && c.Status == corev1.ConditionTrue {
			return nil
		}
	}
	now := metav1.Now()
	capacity := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse("1000"),
		corev1.ResourceMemory: resource.MustParse("4Ti"),
		corev1.ResourcePods:   resource.MustParse("100000"),
	}
	node.Status = corev1.NodeStatus{
		Capacity:    capacity,
		Allocatable: capacity,
		Phase:       corev1.NodeRunning,
		Conditions: []corev1.NodeCondition{{
			Type: corev1.NodeReady, Status: corev1.ConditionTrue, Reason: "KubeletReady",
			Message: "fake kubelet of the kubervisor test harness", LastHeartbeatTime: now, LastTransitionTime: now,
		}},
		Addresses: []corev1.NodeAddress{
			{Type: corev1.NodeInternalIP, Address: ip},
			{Type: corev1.NodeHostName, Address: name},
		},
		NodeInfo: corev1.NodeSystemInfo{
			KubeletVersion: "fake", OperatingSystem: "linux", Architecture: "amd64",
			ContainerRuntimeVersion: "fake://0",
		},
	}
	if _, err := cs.CoreV1().Nodes().UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("setting node %s Ready: %w", name, err)
	}
	return nil
}
