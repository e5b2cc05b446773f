//! The one owner of a joined room's state, and the loop that drains its inbox.
//!
//! JavaScript callbacks only post [`Event`]s ([`crate::inbox`]). The shell handles them from
//! a microtask of its own, one at a time, with its [`State`] borrowed; whatever must call into
//! JavaScript (an application listener, a promise of `join`, `blob()` or a range request) is
//! collected as a [`Notice`] and delivered after that borrow has ended. So no callback runs
//! while the state is borrowed, and a listener may call any method of the API. The methods
//! of the facade borrow the state briefly ([`Shell::with`], [`Shell::read`]) and never while
//! a notice is delivered.

use std::cell::{Cell, RefCell};
use std::collections::VecDeque;
use std::rc::{Rc, Weak};

use tracing::warn;
use wasm_bindgen::JsValue;
use wasm_bindgen_futures::spawn_local;

use crate::download_state::DownloadState;
use crate::error::describe;
use crate::events::{Listeners, SWARM_EVENTS, call_all};
use crate::inbox::{Event, Inbox, Sink};
use crate::notice::Notice;
use crate::state::State;
use crate::timer::{Timeout, now_ms};

/// A joined room: its state, its inbox and the application's listeners.
pub(crate) struct Shell {
    state: RefCell<State>,
    inbox: RefCell<VecDeque<Event>>,
    /// A drain is scheduled and has not started yet.
    scheduled: Cell<bool>,
    listeners: RefCell<Listeners>,
    /// The timer of the node's next upkeep, and its deadline.
    upkeep: RefCell<Option<(u64, Timeout)>>,
    this: Weak<Shell>,
}

impl Sink for Shell {
    fn post(&self, event: Event) {
        self.inbox.borrow_mut().push_back(event);
        self.schedule();
    }
}

impl Shell {
    /// A shell around the state `make` builds with the shell's inbox.
    pub(crate) fn new(make: impl FnOnce(Inbox) -> State) -> Rc<Self> {
        Rc::new_cyclic(|this: &Weak<Shell>| {
            let sink: Weak<dyn Sink> = this.clone();
            Self {
                state: RefCell::new(make(Inbox::new(sink))),
                inbox: RefCell::default(),
                scheduled: Cell::new(false),
                listeners: RefCell::new(Listeners::new(SWARM_EVENTS)),
                upkeep: RefCell::new(None),
                this: this.clone(),
            }
        })
    }

    /// Runs `f` on the state, then schedules the delivery of what it produced. For the
    /// facade's methods, which JavaScript calls only when the state is not borrowed.
    pub(crate) fn with<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let result = f(&mut self.state.borrow_mut());
        self.schedule();
        result
    }

    /// Reads the state.
    pub(crate) fn read<R>(&self, f: impl FnOnce(&State) -> R) -> R {
        f(&self.state.borrow())
    }

    /// The listeners registered with `on`.
    pub(crate) fn listeners(&self) -> std::cell::RefMut<'_, Listeners> {
        self.listeners.borrow_mut()
    }

    /// A weak handle on this shell, for tasks that outlive a call.
    pub(crate) fn weak(&self) -> Weak<Shell> {
        self.this.clone()
    }

    /// Cancels a download: through the node if it runs, otherwise at once.
    pub(crate) fn cancel_download(&self, download: &Rc<DownloadState>) {
        self.with(|state| state.cancel_download(download.id()));
    }

    /// Leaves the room (idempotent): the node closes every connection, and the timers go.
    pub(crate) fn leave(&self) {
        self.with(State::leave);
        self.upkeep.borrow_mut().take();
    }

    fn schedule(&self) {
        if self.scheduled.replace(true) {
            return;
        }
        let this = self.this.clone();
        spawn_local(async move {
            if let Some(shell) = this.upgrade() {
                shell.drain();
            }
        });
    }

    /// Handles every queued event and delivers every notice, in order, until both are empty.
    fn drain(&self) {
        self.scheduled.set(false);
        loop {
            let event = self.inbox.borrow_mut().pop_front();
            let handled = event.is_some();
            let notices = {
                let Ok(mut state) = self.state.try_borrow_mut() else {
                    // Not reachable by construction (nothing borrows across an await); if it
                    // were, the events wait for the next drain instead of panicking.
                    if let Some(event) = event {
                        self.inbox.borrow_mut().push_front(event);
                    }
                    self.schedule();
                    return;
                };
                if let Some(event) = event {
                    state.handle(event);
                }
                state.take_notices()
            };
            if !handled && notices.is_empty() {
                break;
            }
            for notice in notices {
                self.deliver(notice);
            }
        }
        self.arm_upkeep();
    }

    fn deliver(&self, notice: Notice) {
        match notice {
            Notice::Emit(event, args) => {
                let listeners = self.listeners.borrow().snapshot(event);
                call_all(event, &listeners, &args);
            }
            Notice::Settle(callback, value) => {
                if let Err(err) = callback.call1(&JsValue::NULL, &value) {
                    warn!(error = %describe(&err), "settling a promise threw");
                }
            }
            Notice::Progress(download, progress) => download.on_progress(&progress),
            Notice::BadPeer(download, peer, reason) => download.on_bad_peer(peer, reason),
            Notice::Done(download, blob) => download.complete(blob),
            Notice::Failed(download, err) => download.fail(err),
            Notice::Left => self.listeners.borrow_mut().clear(),
        }
    }

    /// Sets the timer for the node's next upkeep if its deadline moved.
    fn arm_upkeep(&self) {
        let deadline = self.read(|state| (!state.has_left()).then(|| state.next_deadline()));
        let mut upkeep = self.upkeep.borrow_mut();
        let Some(deadline) = deadline else {
            upkeep.take();
            return;
        };
        if upkeep.as_ref().is_some_and(|(at, _)| *at == deadline) {
            return;
        }
        let delay = deadline.saturating_sub(now_ms()).min(i32::MAX as u64) as i32;
        let inbox = self.read(|state| state.inbox().clone());
        match Timeout::start(delay, move || inbox.post(Event::Upkeep)) {
            Ok(timer) => *upkeep = Some((deadline, timer)),
            Err(err) => {
                warn!(error = %describe(&err), "cannot start the timer: timeouts will not fire")
            }
        }
    }
}
